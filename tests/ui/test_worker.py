"""The QThread worker with a fake engine: typed signals, model switching, failures, stop."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.jobs import JobQueue, JobState
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress
from heyim_desktop.ui.qt import QImage
from heyim_desktop.ui.worker import GenerationWorker


class FakeEngine:
    def __init__(self, ref: str, log: list[str]) -> None:
        self.name, self.model_name, self.ref, self.log = "fake", f"model-{ref}", ref, log
        self.default_size, self.fixed_size = (64, 64), None
        log.append(f"load {ref}")

    def generate(self, request: GenerationRequest, progress=None, cancel: CancelToken | None = None):  # type: ignore[no-untyped-def]
        from PIL import Image

        request = request.with_seed()
        for step in range(1, request.steps + 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress is not None:
                progress(Progress(step, request.steps, 0.01 * step, 0, 1, np.full((8, 8, 3), step, np.uint8)))
        return GenerationResult(request, (GeneratedImage(Image.new("RGB", (64, 64)), request.seed or 0, 0),),
                                self.model_name, self.name, {"total": 0.0})

    def close(self) -> None:
        self.log.append(f"close {self.ref}")


@pytest.fixture()
def rig(qtbot) -> Iterator[tuple[GenerationWorker, JobQueue, list[str], list[object]]]:  # type: ignore[no-untyped-def]
    log: list[str] = []
    saved: list[object] = []

    def loader(ref: str) -> FakeEngine:
        if ref == "broken":
            raise ModelError("Model folder broken is incomplete: unet/ is missing.")
        return FakeEngine(ref, log)

    queue = JobQueue()
    worker = GenerationWorker(queue, loader, lambda result, job: (saved.append(result) or ("id-1",)))
    worker.start()
    yield worker, queue, log, saved
    worker.stop()
    assert not worker.isRunning()


def test_typed_signals_for_a_job(rig, qtbot) -> None:  # type: ignore[no-untyped-def]
    worker, queue, _log, saved = rig
    progress, previews = [], []
    worker.progress.connect(lambda *a: progress.append(a))
    worker.preview.connect(lambda job_id, img: previews.append((job_id, img)))
    with qtbot.waitSignal(worker.job_finished, timeout=10_000) as blocker:
        job = queue.submit(GenerationRequest("x", steps=3, model="a"))
    assert blocker.args[0] is job and job.saved == ("id-1",) and len(saved) == 1
    assert [(p[0], p[1], p[2]) for p in progress] == [(job.id, 1, 3), (job.id, 2, 3), (job.id, 3, 3)]
    assert all(isinstance(img, QImage) and img.width() == 8 for _, img in previews)


def test_switching_models_closes_the_old_one_before_loading(rig, qtbot) -> None:  # type: ignore[no-untyped-def]
    worker, queue, log, _ = rig
    with qtbot.waitSignal(worker.model_ready, timeout=10_000) as ready:
        worker.request_model("a")  # preload when idle (the picker does this)
    assert ready.args[0].ref == "a" and ready.args[0].model_name == "model-a"
    with qtbot.waitSignal(worker.job_finished, timeout=10_000):
        queue.submit(GenerationRequest("x", steps=1, model="b"))
    assert log == ["load a", "close a", "load b"]


def test_a_broken_model_fails_the_job_with_a_message(rig, qtbot) -> None:  # type: ignore[no-untyped-def]
    worker, queue, _, _ = rig
    failures = []
    worker.model_failed.connect(lambda ref, msg: failures.append((ref, msg)))
    with qtbot.waitSignal(worker.job_failed, timeout=10_000) as blocker:
        queue.submit(GenerationRequest("x", steps=1, model="broken"))
    job, message = blocker.args
    assert job.state is JobState.FAILED and "incomplete" in message
    assert failures and failures[0][0] == "broken"
    # The worker goes on.
    with qtbot.waitSignal(worker.job_finished, timeout=10_000):
        queue.submit(GenerationRequest("x", steps=1, model="a"))


def test_cancel_within_a_step(rig, qtbot) -> None:  # type: ignore[no-untyped-def]
    worker, queue, _, saved = rig
    # Cancel from the worker's own progress report, so no signal latency is involved.
    queue.add_listener(lambda job: job.progress is not None and job.progress.step == 2 and job.cancel.cancel())
    with qtbot.waitSignal(worker.job_cancelled, timeout=10_000) as blocker:
        queue.submit(GenerationRequest("x", steps=150, model="a"))
    assert blocker.args[0].progress.step == 2 and saved == []


def test_stop_cancels_the_running_job_and_unloads(qtbot) -> None:  # type: ignore[no-untyped-def]
    log: list[str] = []
    queue = JobQueue()
    worker = GenerationWorker(queue, lambda ref: FakeEngine(ref, log))
    worker.start()
    with qtbot.waitSignal(worker.job_started, timeout=10_000):
        job = queue.submit(GenerationRequest("x", steps=150, model="a"))
    assert worker.stop(10_000)
    assert job.wait(5)
    # Under load the stop can land before the model finished loading; whatever loaded is closed.
    assert log == [] or log[-1] == "close a"


def test_signals_do_not_leak_references_to_true(qtbot) -> None:  # type: ignore[no-untyped-def]
    """PySide6 6.12.0 dropped a reference to True per emit, aborting Python < 3.12 after a few thousand."""
    import sys

    from heyim_desktop.ui.qt import QObject, Signal

    class Emitter(QObject):
        ping = Signal(int)

    emitter = Emitter()
    emitter.ping.connect(lambda _n: None)
    before = sys.getrefcount(True)
    for n in range(3000):
        emitter.ping.emit(n)
    assert abs(sys.getrefcount(True) - before) < 100
