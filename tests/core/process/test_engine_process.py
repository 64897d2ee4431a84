"""The engine in a real child process on the tiny model: same pixels, cancel, crashes, hangs."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import ModelError, OutOfMemory
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import Job, JobQueue, JobState
from heyim_desktop.core.process import remote
from heyim_desktop.core.process.protocol import Message, MessageWriter, error_from_data, error_to_data, read_message
from heyim_desktop.core.process.remote import ProcessLoader, RemoteEngine
from heyim_desktop.core.request import GenerationRequest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals by PID are POSIX")

KILLED = "The engine stopped unexpectedly (killed by signal 9, likely out of memory). It restarts for the next job."


def _request(model: Path | str, **kw: Any) -> GenerationRequest:
    values: dict[str, Any] = dict(prompt="a red fox", steps=2, width=64, height=64, seed=7, model=str(model))
    values.update(kw)
    return GenerationRequest(**values)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[RemoteEngine]:
    """One child for the tests that leave it running (a child costs a torch import)."""
    e = ProcessLoader(device="cpu")(str(tiny_model))
    yield e
    e.close()


# -- the wire format ---------------------------------------------------------------------------

def test_messages_round_trip_json_and_blobs() -> None:
    import io

    buf = io.BytesIO()
    MessageWriter(buf).send({"ev": "x", "n": [1, 2]}, (b"abc", b""))
    buf.seek(0)
    msg = read_message(buf)
    assert msg == Message({"ev": "x", "n": [1, 2]}, (b"abc", b"")) and read_message(buf) is None


def test_errors_cross_as_data_and_only_known_classes_are_made() -> None:
    from heyim_desktop.core.errors import InvalidRequest

    oom = error_from_data(error_to_data(OutOfMemory("Out of memory on cpu")))
    assert type(oom) is OutOfMemory and str(oom) == "Out of memory on cpu"
    bad = error_from_data(error_to_data(InvalidRequest("steps", "must be from 1 to 150")))
    assert isinstance(bad, InvalidRequest) and bad.field == "steps"
    bug = error_from_data(error_to_data(RuntimeError("boom")))
    assert not isinstance(bug, ModelError) and str(bug) == "RuntimeError: boom"
    assert str(error_from_data({"kind": "os.system", "message": "x"})) == "Error: x"  # never a lookup elsewhere


# -- a real child ------------------------------------------------------------------------------

def test_child_results_equal_the_in_process_engine_bit_for_bit(engine: RemoteEngine, tiny_engine: Any,
                                                              tiny_model: Path) -> None:
    from PIL import Image

    assert engine.stopped is False and engine.pid != os.getpid()
    # EngineInfo (capabilities included) crossed the channel as plain data and came back equal.
    import dataclasses

    # (The child loads through load_engine, which adds the model hash; the fixture does not.)
    assert dataclasses.replace(engine.info, model_hash=tiny_engine.info.model_hash) == tiny_engine.info
    assert engine.capabilities == tiny_engine.capabilities
    assert engine.info.model_hash and len(engine.info.model_hash) == 10
    assert (engine.default_size, engine.fixed_size) == (tiny_engine.default_size, tiny_engine.fixed_size)
    txt = _request(tiny_model, count=2)
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img = _request(tiny_model, init_image=init, strength=0.5, steps=4, scheduler="Euler a")
    from heyim_desktop.core.masking import Extend, InpaintSpec

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = _request(tiny_model, init_image=init, inpaint=InpaintSpec(mask=mask, blur=2), steps=2)
    outpaint = _request(tiny_model, init_image=init, extend=Extend(left=8, right=8), steps=2)
    for request in (txt, img, inpaint, outpaint):
        steps: list[int] = []
        ours = engine.generate(request, progress=lambda p, steps=steps: steps.append(p.step))
        theirs = tiny_engine.generate(request)
        assert len(ours.images) == len(theirs.images) == request.count
        for a, b in zip(ours.images, theirs.images):
            assert a.seed == b.seed
            assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert ours.request == theirs.request
        assert ours.model_hash == engine.info.model_hash  # the result's hash crosses too
        if request is outpaint:  # the recorded request is the grown canvas, sent back whole
            assert ours.request.width == 80 and ours.request.extend is None
            assert np.array_equal(np.asarray(ours.request.init_image), np.asarray(theirs.request.init_image))
            assert np.array_equal(np.asarray(ours.request.inpaint.mask), np.asarray(theirs.request.inpaint.mask))
        else:
            assert ours.request.init_image is request.init_image
        assert steps and steps[-1] == steps[0] + len(steps) - 1
    assert engine.count_tokens("a red fox", timeout=30) == tiny_engine.count_tokens("a red fox")


def test_without_room_for_shared_memory_the_pixels_come_over_the_pipe(
        engine: RemoteEngine, tiny_engine: Any, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.process import shared

    monkeypatch.setattr(shared, "room_for", lambda size: False)  # a full /dev/shm
    request = _request(tiny_model, width=128, count=3)  # larger than the kept block
    ours, theirs = engine.generate(request), tiny_engine.generate(request)
    assert engine._block is None
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(ours.images, theirs.images))


def test_cancel_is_honoured_within_a_step_and_the_child_goes_on(engine: RemoteEngine, tiny_model: Path) -> None:
    cancel = CancelToken()
    seen: list[int] = []

    def on_progress(p: Any) -> None:
        seen.append(p.step)
        cancel.cancel()

    with pytest.raises(Cancelled):
        engine.generate(_request(tiny_model, steps=150), progress=on_progress, cancel=cancel)
    assert seen and max(seen) <= 2 and not engine.stopped
    assert len(engine.generate(_request(tiny_model)).images) == 1


# -- upscale jobs in the child -------------------------------------------------------------------

def _upscale_request(path: Path | None, **kw: Any) -> Any:
    from PIL import Image

    from heyim_desktop.core.upscale_job import UpscaleRequest

    rgba = np.random.default_rng(5).integers(0, 255, (40, 52, 4), dtype=np.uint8)
    values: dict[str, Any] = dict(image=Image.fromarray(rgba, "RGBA"), scale=2.0, upscaler=path.stem if path else "Lanczos",
                                  upscaler_path=str(path) if path else None, tile_preference=32, seed=11)
    values.update(kw)
    return UpscaleRequest(**values)


@pytest.fixture(scope="module")
def esrgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_upscaler import make_esrgan

    return make_esrgan(tmp_path_factory.mktemp("esrgan"), 2)[0]


def test_upscales_run_in_the_child_and_equal_the_in_process_job_bit_for_bit(engine: RemoteEngine, esrgan: Path) -> None:
    from heyim_desktop.core.upscale_job import UpscaleResult, run_upscale_job

    pid = engine.pid
    for request in (_upscale_request(esrgan), _upscale_request(esrgan, size=(90, 70)), _upscale_request(None),
                    _upscale_request(None, upscaler="Nearest", scale=1.5)):
        tiles: list[tuple[int, int]] = []
        ours = engine.upscale(request, progress=lambda p, tiles=tiles: tiles.append((p.step, p.total)))
        theirs_tiles: list[tuple[int, int]] = []
        theirs = run_upscale_job(request, progress=lambda p, t=theirs_tiles: t.append((p.step, p.total)))
        assert isinstance(ours, UpscaleResult) and ours.request is request
        assert ours.images[0].image.size == theirs.images[0].image.size == request.output_size
        assert np.array_equal(np.asarray(ours.images[0].image), np.asarray(theirs.images[0].image))
        assert (ours.tiles, ours.model_name, ours.images[0].seed) == (theirs.tiles, theirs.model_name, 11)
        assert tiles == theirs_tiles  # progress per tile crosses as it is
        if request.upscaler_path:
            assert len(tiles) == ours.tiles > 1
    assert engine.pid == pid and not engine.stopped
    # The model stays loaded: a generation still runs in the same child.
    assert len(engine.generate(_request(engine.ref)).images) == 1 and engine.pid == pid


def test_an_upscale_cancelled_between_tiles_stops_and_the_child_goes_on(engine: RemoteEngine, esrgan: Path) -> None:
    cancel = CancelToken()
    seen: list[int] = []

    def on_progress(p: Any) -> None:
        seen.append(p.step)
        cancel.cancel()

    with pytest.raises(Cancelled):
        engine.upscale(_upscale_request(esrgan, tile_preference=32, scale=4.0), progress=on_progress, cancel=cancel)
    assert seen and max(seen) <= 2 and not engine.stopped
    assert engine.upscale(_upscale_request(None)).images[0].image.size == (104, 80)


def test_a_bad_upscale_fails_with_its_message_and_the_child_goes_on(engine: RemoteEngine, tmp_path: Path) -> None:
    broken = tmp_path / "broken_x2.safetensors"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        engine.upscale(_upscale_request(broken))
    assert not engine.stopped


def test_closing_the_engine_ends_the_child(engine: RemoteEngine) -> None:
    """What a model switch and "Unload Model" do (EngineHost.unload closes the engine); runs
    after the other tests that share the module's child."""
    process = engine.process
    engine.close()
    assert not process.alive and process.returncode == 0 and engine.stopped


# -- crashes through the host and queue (the serve and worker path) -----------------------------

class Killer:
    """Kills the engine child by PID at a job's first progress report, for the jobs chosen."""

    def __init__(self, host: EngineHost, which: Any) -> None:
        self.host, self.which = host, which
        self.killed: list[int] = []
        self.started: list[int] = []
        self.pids: list[int] = []

    def __call__(self, job: Job) -> None:
        if job.state is not JobState.RUNNING:
            return
        if job.progress is None:
            self.started.append(int(job.id))
            return
        if job.progress.step == 1 and job.progress.image_index == 0 and self.which(int(job.id)) \
                and int(job.id) not in self.killed:
            engine = self.host.engine
            assert isinstance(engine, RemoteEngine)
            self.killed.append(int(job.id))
            self.pids.append(engine.pid)
            os.kill(engine.pid, signal.SIGKILL)


def _rig(tiny_model: Path, which: Any) -> tuple[JobQueue, EngineHost, WorkerThread, Killer, list[int]]:
    queue = JobQueue()
    host = EngineHost(ProcessLoader(device="cpu"), default_model=str(tiny_model))
    saved: list[int] = []
    killer = Killer(host, which)
    queue.add_listener(killer)
    worker = WorkerThread(queue, host, lambda result, job: (saved.append(int(job.id)) or (int(job.id),)))
    worker.start()
    return queue, host, worker, killer, saved


def test_sigkill_mid_job_fails_that_job_only_and_the_next_one_restarts_the_child(
        tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue, host, worker, killer, saved = _rig(tiny_model, lambda job_id: job_id == 1)
    try:
        with caplog.at_level(logging.INFO, logger="heyim_desktop"):
            first = queue.submit(_request(tiny_model, steps=150))
            second = queue.submit(_request(tiny_model))
            assert first.wait(120) and second.wait(120)
    finally:
        worker.stop(60)
    assert first.state is JobState.FAILED and first.error_message == KILLED
    assert second.state is JobState.DONE and saved == [int(second.id)]
    assert killer.pids and killer.pids[0] != os.getpid()
    # The log keeps what the child wrote last, and the crash with its signal.
    crash = [r.getMessage() for r in caplog.records if "stopped unexpectedly" in r.getMessage()]
    assert crash and "killed by signal 9" in crash[0] and "last lines it wrote" in crash[0]
    assert "torch_engine" in crash[0]  # the child's own log lines are in the tail


@pytest.mark.slow
def test_sigkill_mid_upscale_costs_that_job_only_with_or_without_a_model_loaded(tiny_model: Path, esrgan: Path) -> None:
    """slow: three engine children start (each a torch import, 5 to 20 s on a 2-core CI box)."""
    from heyim_desktop.core.process.remote import RemoteUpscaler
    from heyim_desktop.core.upscale_job import UpscaleRequest

    loader = ProcessLoader(device="cpu")
    host = EngineHost(loader, default_model=str(tiny_model), upscalers=loader.upscaler)
    queue = JobQueue()
    saved: list[int] = []
    killed: dict[int, int] = {}
    ran_in: dict[int, int] = {}

    def kill_at_first_tile(job: Job) -> None:
        if job.state is not JobState.RUNNING or job.progress is None or not isinstance(job.request, UpscaleRequest):
            return
        runner = host.engine if host.engine is not None and not host.engine.stopped else host.upscaler
        ran_in.setdefault(int(job.id), runner.pid)
        if job.request.seed in (1, 5) and int(job.id) not in killed:
            killed[int(job.id)] = runner.pid
            os.kill(runner.pid, signal.SIGKILL)

    queue.add_listener(kill_at_first_tile)
    worker = WorkerThread(queue, host, lambda result, job: (saved.append(int(job.id)) or (int(job.id),)))
    worker.start()
    try:
        # No model loaded: upscales run in a model-less child; killing it costs that job only.
        doomed = queue.submit(_upscale_request(esrgan, seed=1))
        after = queue.submit(_upscale_request(esrgan, seed=2))
        assert doomed.wait(180) and after.wait(180)
        assert doomed.state is JobState.FAILED and doomed.error_message == KILLED
        assert after.state is JobState.DONE, after.error_message
        assert isinstance(host.upscaler, RemoteUpscaler) and host.upscaler.pid not in (killed[int(doomed.id)], os.getpid())
        upscaler_process = host.upscaler.process
        # A generation loads the model in its own child and ends the model-less one.
        generated = queue.submit(_request(tiny_model))
        assert generated.wait(180) and generated.state is JobState.DONE, generated.error_message
        assert host.upscaler is None and not upscaler_process.alive
        model_pid = host.engine.pid  # type: ignore[union-attr]
        # With a model loaded, upscales run in its child; a kill there is not the model's crash.
        in_model = queue.submit(_upscale_request(esrgan, seed=3))
        assert in_model.wait(180) and in_model.state is JobState.DONE, in_model.error_message
        assert ran_in[int(in_model.id)] == model_pid
        dies = queue.submit(_upscale_request(esrgan, seed=5))
        assert dies.wait(180) and dies.state is JobState.FAILED and dies.error_message == KILLED
        assert killed[int(dies.id)] == model_pid and loader.crashes(str(tiny_model)) == 0
        again = queue.submit(_request(tiny_model, seed=9))  # the model reloads in a fresh child
        assert again.wait(180) and again.state is JobState.DONE, again.error_message
        assert host.engine is not None and host.engine.pid != model_pid
    finally:
        worker.stop(60)
    assert sorted(saved) == sorted(int(j.id) for j in (after, generated, in_model, again))


@pytest.mark.slow
def test_three_crashes_in_a_row_stop_automatic_restarts_for_that_model(tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(ModelError):  # the child says why it cannot load; not a crash
        ProcessLoader(device="cpu")(str(broken))
    queue, host, worker, killer, saved = _rig(tiny_model, lambda job_id: job_id <= 3)
    try:
        jobs = [queue.submit(_request(tiny_model, steps=150 if i < 3 else 2)) for i in range(4)]
        assert all(j.wait(180) for j in jobs)
        assert [j.state for j in jobs] == [JobState.FAILED] * 4
        assert jobs[0].error_message == jobs[1].error_message == KILLED
        assert "3 times in a row" in (jobs[2].error_message or "") and "not restarted automatically" in jobs[2].error_message
        assert "no longer restarts it automatically" in (jobs[3].error_message or "")
        assert isinstance(jobs[3].error, ModelError)
        # Choosing the model again allows a restart.
        loader = host._loader
        assert isinstance(loader, ProcessLoader)
        loader.forgive(str(tiny_model))
        again = queue.submit(_request(tiny_model))
        assert again.wait(120) and again.state is JobState.DONE, again.error_message
    finally:
        worker.stop(60)


@pytest.mark.slow
def test_twenty_kills_with_jobs_queued_lose_nothing_and_run_nothing_twice(tiny_model: Path) -> None:
    # Two kills, then a job that finishes: crashes never reach three in a row.
    kill = lambda job_id: job_id % 3 != 0 and len(killer.killed) < 20  # noqa: E731
    queue, host, worker, killer, saved = _rig(tiny_model, lambda job_id: kill(job_id))
    try:
        jobs = [queue.submit(_request(tiny_model, steps=150 if (i + 1) % 3 else 2, seed=i)) for i in range(30)]
        assert all(j.wait(600) for j in jobs)
    finally:
        worker.stop(60)
    assert len(killer.killed) == 20
    assert sorted(killer.started) == sorted(int(j.id) for j in jobs)  # each job ran exactly once
    for job in jobs:
        if int(job.id) in killer.killed:
            assert job.state is JobState.FAILED and job.error_message == KILLED
        else:
            assert job.state is JobState.DONE, job.error_message
    assert sorted(saved) == sorted(int(j.id) for j in jobs if j.state is JobState.DONE)
    assert len(set(killer.pids)) == 20  # a fresh child every time


def test_a_child_that_ignores_cancel_is_killed_after_the_grace_period(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HEYIM_ENGINE_TEST_HOOKS", "1")
    blocked = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "the UNet blocks" in record.getMessage():
                blocked.set()

    watch = Watch()
    logging.getLogger("heyim_desktop.engine_child").addHandler(watch)
    loader = ProcessLoader(device="cpu", cancel_grace_s=0.5)
    engine = loader(f"hang:{tiny_model}")
    cancel = CancelToken()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(_request(tiny_model, steps=3), cancel=cancel)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=run)
    try:
        with caplog.at_level(logging.INFO, logger="heyim_desktop"):
            thread.start()
            assert blocked.wait(120), "the hung UNet was never reached"
            cancel.cancel()
            thread.join(60)
    finally:
        logging.getLogger("heyim_desktop.engine_child").removeHandler(watch)
        engine.close()
    assert outcome and isinstance(outcome[0], Cancelled)
    assert engine.stopped and engine.killed_hung and engine.process.returncode == -signal.SIGKILL
    assert any("did not stop within 0.5 s of a cancel" in r.getMessage() for r in caplog.records)
    assert loader.crashes(f"hang:{tiny_model}") == 0  # our own kill is not a crash


def test_a_missing_model_needs_no_child_and_is_not_a_crash(tmp_path: Path) -> None:
    loader = ProcessLoader(device="cpu")
    with pytest.raises(ModelError, match="not found"):
        loader(str(tmp_path / "missing"))
    assert loader.crashes(str(tmp_path / "missing")) == 0


def test_describe_exit_names_signals_and_codes() -> None:
    from heyim_desktop.core.process.protocol import describe_exit

    assert describe_exit(-9) == "killed by signal 9, likely out of memory"
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV), a crash in native code"
    assert describe_exit(3) == "exited with code 3"
    assert remote.MAX_CRASHES_IN_A_ROW == 3
