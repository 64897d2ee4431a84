from __future__ import annotations

import threading
from pathlib import Path

import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import Job, JobQueue, JobState
from heyim_desktop.core.request import GenerationRequest


def _req(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a fox", steps=2, width=64, height=64, model="tiny", **kw)  # type: ignore[arg-type]


def test_fifo_remove_and_listeners() -> None:
    q = JobQueue()
    events: list[tuple[int, JobState]] = []
    q.add_listener(lambda j: events.append((j.id, j.state)))
    a, b, c = q.submit(_req()), q.submit(_req()), q.submit(_req())
    assert [j.id for j in q.pending()] == [a.id, b.id, c.id]
    assert q.remove(b.id) and b.state is JobState.CANCELLED and b.wait(0)
    assert not q.remove(b.id)
    taken = q.take(timeout=0)
    assert taken is a and a.state is JobState.RUNNING and q.running is a
    assert not q.remove(a.id)  # running jobs are cancelled, not removed
    assert q.cancel(a.id) and a.cancel.cancelled
    q.finish(a, cancelled=True)
    assert q.running is None and a.state is JobState.CANCELLED
    assert (b.id, JobState.CANCELLED) in events and (a.id, JobState.RUNNING) in events
    assert len(q) == 1
    q.close()
    assert c.state is JobState.CANCELLED and q.take(timeout=0) is None


def test_take_times_out_when_empty() -> None:
    assert JobQueue().take(timeout=0.01) is None


def test_worker_runs_jobs_one_at_a_time_and_reuses_the_model(tiny_model: Path) -> None:
    from heyim_desktop.core.torch_engine import load_torch_engine

    loads: list[str] = []

    def loader(ref: str):  # type: ignore[no-untyped-def]
        loads.append(ref)
        if ref == "missing":
            raise ModelError("Model not found: missing")
        return load_torch_engine(tiny_model, device="cpu")

    q = JobQueue()
    saved: list[int] = []
    running_now = []
    overlap = threading.Event()

    def listener(job: Job) -> None:
        if job.state is JobState.RUNNING:
            running_now.append(job.id)
        if len([j for j in running_now]) > 1 and q.running is not None and q.running.id != job.id and job.state is JobState.RUNNING:
            overlap.set()

    q.add_listener(listener)

    def sink(result, job):  # type: ignore[no-untyped-def]
        saved.append(job.id)
        return (f"saved-{job.id}",)

    host = EngineHost(loader)
    worker = WorkerThread(q, host, sink)
    worker.start()
    jobs = [q.submit(_req(seed=i)) for i in range(3)]
    bad = q.submit(GenerationRequest(prompt="x", steps=1, width=64, height=64, model="missing"))
    after = q.submit(_req(seed=9))
    for job in [*jobs, bad, after]:
        assert job.wait(60)
    worker.stop(10)
    assert [j.state for j in jobs] == [JobState.DONE] * 3
    assert saved == [j.id for j in jobs] + [after.id]
    assert jobs[0].saved == (f"saved-{jobs[0].id}",)
    assert bad.state is JobState.FAILED and bad.error_message == "Model not found: missing"
    assert loads == ["tiny", "missing", "tiny"]
    assert not overlap.is_set()
    assert not worker.is_alive() and host.engine is None


def test_cancel_running_job_stops_it(tiny_model: Path) -> None:
    from heyim_desktop.core.torch_engine import load_torch_engine

    q = JobQueue()
    host = EngineHost(lambda ref: load_torch_engine(tiny_model, device="cpu"))
    job = q.submit(_req().replace(steps=50))
    q.add_listener(lambda j: j.progress is not None and j.progress.step == 2 and j.cancel.cancel())
    taken = q.take(timeout=1)
    assert taken is job
    host.run_job(q, job, sink=lambda r, j: pytest.fail("a cancelled job must not be saved"))  # type: ignore[arg-type,return-value]
    assert job.state is JobState.CANCELLED and job.result is None and job.progress is not None
    assert job.progress.step == 2
    host.unload()


def test_no_model_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="No model is selected"):
        EngineHost(lambda ref: None).ensure_model(None)  # type: ignore[arg-type,return-value]
