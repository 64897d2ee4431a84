"""End to end: a real redis-server, worker subprocesses on the tiny model, the CLI and the client."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from heyim_desktop.cli import main
from heyim_desktop.core.metadata import read_parameters
from heyim_desktop.scale.records import PREFIX, Records
from queue_helpers import Farm, RedisServer, Waiter, WorkerProcess

DB_FARM, DB_MISSING = 0, 2


@pytest.fixture(scope="module")
def _pair(redis_server: RedisServer, farm: Farm) -> dict[str, WorkerProcess]:
    redis_server.client(DB_FARM).flushdb()
    return {}


@pytest.fixture()
def demo_pair(_pair: dict[str, WorkerProcess], redis_server: RedisServer, farm: Farm) -> Iterator[str]:
    """Two --demo workers, w1 and w2, sharing one queue and both ready (a killed one is restarted)."""
    url = redis_server.url(DB_FARM)
    for name in ("w1", "w2"):
        if name not in _pair or _pair[name].process.poll() is not None:
            _pair[name] = farm.start(url, name, "--demo")
    records = Records(redis_server.client(DB_FARM))
    waiter = Waiter(records.r)
    try:
        waiter.until(lambda: {w.id for w in records.workers() if w.state == "idle"} >= {"w1", "w2"}, 120,
                     "two idle workers", farm.logs)
    finally:
        waiter.close()
    yield url


def _finished(records: Records, batch_id: str) -> bool:
    status = records.batch(batch_id)
    return status is not None and status.finished


def _batch_id(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_batch_of_20_on_two_workers_gives_exactly_20_images(
    demo_pair: str, redis_server: RedisServer, farm: Farm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch_file = tmp_path / "fox.csv"
    batch_file.write_text("prompt,negative,seed,steps,guidance,size,scheduler\n"
                          "a red fox,blurry,1-20,2,5,64x64,Euler\n", encoding="utf-8")
    batch_id = _batch_id(capsys, ["batch", "submit", "--queue", demo_pair, str(batch_file)])
    records = Records(redis_server.client(DB_FARM))
    waiter = Waiter(records.r)
    waiter.until(lambda: _finished(records, batch_id), 120, "the batch to finish", farm.logs)
    waiter.close()

    status = records.batch(batch_id)
    assert status is not None and status.count("done") == 20
    assert {j.worker for j in status.jobs} == {"w1", "w2"}  # both machines took jobs
    assert all(j.attempts == 1 for j in status.jobs)

    out = tmp_path / "out"
    assert main(["batch", "collect", "--queue", demo_pair, batch_id, "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{batch_id}-{i:05d}.png" for i in range(1, 21)]
    params = read_parameters(pngs[4])
    assert params is not None
    assert (params.prompt, params.negative_prompt, params.seed, params.steps, params.size, params.sampler) == (
        "a red fox", "blurry", 5, 2, (64, 64), "Euler")
    with Image.open(pngs[4]) as img:
        settings = json.loads(img.info["heyim"])
    assert settings["queue_job"] == f"{batch_id}-00005" and settings["worker"] in ("w1", "w2")

    # Collecting again writes nothing new: one image per job id, ever.
    capsys.readouterr()
    assert main(["batch", "collect", "--queue", demo_pair, batch_id, "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 20
    assert "0 new image(s) (20 already there)" in capsys.readouterr().err
    assert main(["batch", "status", "--queue", demo_pair, batch_id]) == 0
    assert "20 job(s): 20 done" in capsys.readouterr().out


def test_collected_results_land_in_the_history(demo_pair: str, redis_server: RedisServer, farm: Farm,
                                               tmp_path: Path) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.scale.client import RemoteQueue, collect_into_history
    from heyim_desktop.store import HistoryStore

    records = Records(redis_server.client(DB_FARM))
    store = HistoryStore.open(root=tmp_path / "history")
    try:
        remote = RemoteQueue(demo_pair, store)  # what the app uses when Preferences name a queue
        submitted = remote.submit([
            GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="fog", steps=2, width=64, height=64,
                              seed=5, count=3, scheduler="DDIM"),
            GenerationRequest(prompt="elsewhere", steps=2, width=64, height=64, seed=1, model="not-on-any-worker"),
        ])
        assert len(submitted.job_ids) == 4 and remote.open_batches == [submitted.batch_id]
        waiter = Waiter(records.r)
        waiter.until(lambda: _finished(records, submitted.batch_id), 120, "the batch to finish", farm.logs)
        waiter.close()

        got = remote.poll()
        assert len(got.saved) == 3 and got.pending == 0 and remote.open_batches == []
        assert len(got.failed) == 1 and "not-on-any-worker" in got.failed[0][1]
        entries = store.page(0, 10)
        assert sorted(e.seed for e in entries) == [5, 6, 7]
        assert {(e.prompt, e.negative_prompt, e.steps, e.width, e.scheduler) for e in entries} == {
            ("a lighthouse at dusk", "fog", 2, 64, "DDIM")}
        assert all(e.path.is_file() and f"Seed: {e.seed}," in e.parameters for e in entries)
        assert read_parameters(entries[0].path) is not None
        again = collect_into_history(demo_pair, submitted.batch_id, store)  # importing twice adds nothing
        assert again.saved == () and again.already == 3 and store.count() == 3
    finally:
        store.close()
    failed = next(j for j in records.batch(submitted.batch_id).jobs if j.state == "failed")  # type: ignore[union-attr]
    assert failed.attempts == 1  # a user's problem is not retried


def test_a_worker_whose_model_is_missing_fails_its_jobs_with_the_reason(
    redis_server: RedisServer, farm: Farm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_server.url(DB_MISSING)
    redis_server.client(DB_MISSING).flushdb()
    worker = farm.start(url, "lost", "--model", str(tmp_path / "no-such-model"))
    batch_file = tmp_path / "jobs.jsonl"
    batch_file.write_text('{"prompt": "a cat", "seed": "1-3", "steps": 2, "size": "64x64"}\n', encoding="utf-8")
    batch_id = _batch_id(capsys, ["batch", "submit", "--queue", url, str(batch_file)])
    records = Records(redis_server.client(DB_MISSING))
    waiter = Waiter(records.r)
    waiter.until(lambda: _finished(records, batch_id), 120, "the jobs to fail", farm.logs)
    waiter.close()
    status = records.batch(batch_id)
    assert status is not None
    assert [(j.state, j.attempts) for j in status.jobs] == [("failed", 1)] * 3
    assert all(f"not found: {tmp_path / 'no-such-model'}" in j.error for j in status.jobs)
    assert worker.process.poll() is None  # the worker stays up
    capsys.readouterr()
    assert main(["batch", "collect", "--queue", url, batch_id, "--out", str(tmp_path / "out")]) == 4
    err = capsys.readouterr().err
    assert "failed: Model folder not found" in err and "Collected 0 new image(s)" in err



def test_poison_messages_fail_on_the_first_attempt_and_are_dead_lettered(
    demo_pair: str, redis_server: RedisServer, farm: Farm
) -> None:
    import uuid

    from dramatiq import Message

    from heyim_desktop.core.codec import request_to_data
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.scale import broker as qb
    from heyim_desktop.scale.client import new_batch_id, submit_requests
    from heyim_desktop.scale.records import NewJob

    records = Records(redis_server.client(DB_FARM))
    broker = qb.make_broker(records.r)
    poison: list[str] = []
    try:
        raw = str(uuid.uuid4())  # not a Dramatiq message at all
        records.r.hset(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.msgs", raw, b"\x80 not json")
        records.r.rpush(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}", raw)
        poison.append(raw)
        for args, kwargs in (((1, 2), {}), ((), {"path": "/etc/passwd"}), (("../../x",), {})):
            sent = broker.enqueue(Message(queue_name=qb.QUEUE_NAME, actor_name=qb.ACTOR_NAME, args=args, kwargs=kwargs,
                                          options={}))
            poison.append(sent.options["redis_message_id"])
        batch_id = new_batch_id()
        request = GenerationRequest(prompt="x", seed=1, width=64, height=64, steps=2)
        (bad_job,) = records.create_batch(batch_id, [NewJob(request_to_data(request))], name="poison", source="test")
        records.r.hset(f"{PREFIX}job:{bad_job}", "request", "{not json")  # a record HeyIm did not write
        poison.append(qb.send_job(broker, bad_job))
        after = submit_requests(demo_pair, [request], name="after the poison").batch_id  # workers still serve
    finally:
        broker.close()
    dead = f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.XQ"
    waiter = Waiter(records.r)
    waiter.until(lambda: all(records.r.zscore(dead, m) is not None for m in poison) and _finished(records, after),
                 120, "the poison to be dead-lettered", farm.logs)
    waiter.close()
    status = records.batch(batch_id)
    assert status is not None and status.jobs[0].state == "failed"
    assert "malformed: its request is not JSON" in status.jobs[0].error
    assert records.batch(after).count("done") == 1  # type: ignore[union-attr]
    assert records.r.llen(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}") == 0  # nothing retried without end
    assert records.r.hlen(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.DQ.msgs") == 0


def test_a_running_job_whose_worker_and_message_are_lost_is_queued_again(
    demo_pair: str, redis_server: RedisServer, farm: Farm
) -> None:
    from heyim_desktop.core.codec import request_to_data
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.scale.client import new_batch_id
    from heyim_desktop.scale.records import NewJob

    records = Records(redis_server.client(DB_FARM))
    batch_id = new_batch_id()
    request = GenerationRequest(prompt="a lost one", seed=4, width=64, height=64, steps=2)
    (job_id,) = records.create_batch(batch_id, [NewJob(request_to_data(request))], name="lost", source="test")
    # What a Redis restart at the wrong moment leaves: "running" on a worker that is gone, and
    # its message in no queue, ack set, delay or dead-letter set.
    assert records.begin(job_id, "gone-worker", "a-message-that-is-nowhere") is not None
    waiter = Waiter(records.r)
    waiter.until(lambda: _finished(records, batch_id), 120, "the lost job to be reaped and rendered", farm.logs)
    waiter.close()
    (job,) = records.batch(batch_id).jobs  # type: ignore[union-attr]
    assert (job.state, job.attempts) == ("done", 2) and job.worker in ("w1", "w2")
    assert "queued again" in farm.logs()


def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(
    demo_pair: str, _pair: dict[str, WorkerProcess], redis_server: RedisServer, farm: Farm, tmp_path: Path
) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.scale.client import submit_requests

    records = Records(redis_server.client(DB_FARM))
    waiter = Waiter(records.r)
    victim = _pair["w2"]
    # Jobs slow enough (tens of steps) to catch one in the middle.
    request = GenerationRequest(prompt="a slow lighthouse", steps=20, width=128, height=128, seed=100, count=6)
    batch_id = submit_requests(demo_pair, [request], name="kill test").batch_id

    def victim_mid_job() -> str | None:
        status = records.batch(batch_id)
        assert status is not None
        return next((j.id for j in status.jobs if j.worker == "w2" and j.state == "running" and j.step >= 1), None)

    job_id = waiter.until(victim_mid_job, 60, "the victim to be rendering", farm.logs)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    killed = records.r.hgetall(f"{PREFIX}job:{job_id}")
    assert killed[b"state"] == b"running" and killed[b"worker"] == b"w2"  # it died mid-job

    waiter.until(lambda: _finished(records, batch_id), 120, "the batch to finish after the kill", farm.logs)
    waiter.close()
    status = records.batch(batch_id)
    assert status is not None and status.count("done") == 6
    retried = next(j for j in status.jobs if j.id == job_id)
    assert retried.attempts == 2 and retried.worker == "w1"
    assert [j.attempts for j in status.jobs if j.id != job_id] == [1] * 5
    results = [records.result(j.id) for j in status.jobs]
    assert all(r is not None and len(r.images) == 1 for r in results)
    assert sorted(r.images[0][1] for r in results if r) == list(range(100, 106))  # one image per seed

    out = tmp_path / "out"
    assert main(["batch", "collect", "--queue", demo_pair, batch_id, "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 6


def test_a_stopped_worker_puts_its_running_job_back(_pair: dict[str, WorkerProcess], redis_server: RedisServer,
                                                     farm: Farm) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.scale.broker import NAMESPACE, QUEUE_NAME
    from heyim_desktop.scale.client import submit_requests

    url = redis_server.url(DB_FARM)
    records = Records(redis_server.client(DB_FARM))
    waiter = Waiter(records.r)
    for name, proc in _pair.items():  # only w1 may take the job (w2 is usually dead by now)
        if name != "w1" and proc.process.poll() is None:
            proc.process.terminate()
            proc.process.wait(60)
    if "w1" not in _pair or _pair["w1"].process.poll() is not None:
        _pair["w1"] = farm.start(url, "w1", "--demo")
        waiter.until(lambda: any(w.id == "w1" and w.state == "idle" for w in records.workers()), 120,
                     "w1 to be ready", farm.logs)
    worker = _pair["w1"]
    request = GenerationRequest(prompt="a long one", steps=150, width=256, height=256, seed=9)
    batch_id = submit_requests(url, [request]).batch_id

    def mid_job() -> bool:
        status = records.batch(batch_id)
        return status is not None and status.jobs[0].state == "running" and status.jobs[0].step >= 1

    waiter.until(mid_job, 120, "the job to be rendering", farm.logs)
    worker.process.send_signal(signal.SIGTERM)  # what Ctrl+C or a service manager sends
    assert worker.process.wait(60) == 0
    waiter.close()
    status = records.batch(batch_id)
    assert status is not None
    assert [(j.state, j.attempts) for j in status.jobs] == [("queued", 0)]  # a clean stop is not an attempt
    messages = sum(records.r.hlen(f"{NAMESPACE}:{q}.msgs") for q in (QUEUE_NAME, f"{QUEUE_NAME}.DQ"))
    assert messages == 1  # its message is back on the queue for the next worker
    assert "w1" not in [w.id for w in records.workers()]  # it said goodbye
