"""What HeyIm keeps in Redis about batches, jobs, results and workers.

Dramatiq moves messages (a job id each); these records say what a job is and how it went,
so any machine can watch or collect a batch. Keys (all under ``heyim:``):

* ``batches``: sorted set of batch ids by creation time.
* ``batch:<id>``: hash (name, source, created, total); ``batch:<id>:jobs``: list of job ids.
* ``job:<id>``: hash (batch, index, line, request JSON, state, attempts, worker, error,
  step, total, started, finished).
* ``result:<id>``: the finished images as JSON, written with ``SET NX``: whichever attempt
  finishes first wins, so a retried job never yields two results.
* ``worker:<id>``: hash refreshed by the worker's heartbeat, expiring when it stops;
  ``workers``: set of worker ids seen.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import redis

    from heyim_desktop.core.result import GenerationResult

PREFIX = "heyim:"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)
#: How long batches, jobs and results stay in Redis after their last change.
DEFAULT_TTL_S = 14 * 24 * 3600
WORKER_TTL_S = 30


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


@dataclass(frozen=True)
class NewJob:
    """One job to submit: the request as codec data (seed resolved, count 1 or more)."""

    request: dict[str, Any]
    line: int = 0


@dataclass(frozen=True)
class JobStatus:
    id: str
    index: int
    line: int
    state: str
    attempts: int
    worker: str
    error: str
    step: int
    total: int


@dataclass(frozen=True)
class BatchStatus:
    id: str
    name: str
    source: str
    created: float
    total: int
    jobs: tuple[JobStatus, ...]

    def count(self, state: str) -> int:
        return sum(1 for j in self.jobs if j.state == state)

    @property
    def finished(self) -> bool:
        return all(j.state in FINISHED for j in self.jobs)


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    host: str
    model: str
    device: str
    state: str
    job: str
    jobs_done: int
    last_seen: float


@dataclass(frozen=True)
class StoredResult:
    """A finished job's images (PNG bytes) and what the engine said about them."""

    job_id: str
    worker: str
    model_name: str
    engine: str
    timings: dict[str, float]
    warnings: tuple[str, ...]
    images: tuple[tuple[int, int, bytes], ...]  # (index, seed, png)

    def to_result(self, request_data: Mapping[str, Any]) -> "GenerationResult":
        """A core GenerationResult, so front ends save it like a local generation."""
        from PIL import Image

        from heyim_desktop.core.codec import request_from_data
        from heyim_desktop.core.result import GeneratedImage, GenerationResult

        request = request_from_data(request_data)
        images = []
        for index, seed, png in self.images:
            with Image.open(io.BytesIO(png)) as img:
                images.append(GeneratedImage(image=img.convert("RGB"), seed=seed, index=index))
        return GenerationResult(
            request=request, images=tuple(images), model_name=self.model_name, engine=self.engine,
            timings=dict(self.timings), warnings=self.warnings,
        )


def encode_result(job_id: str, worker: str, result: "GenerationResult") -> str:
    images = []
    for item in result.images:
        buf = io.BytesIO()
        item.image.save(buf, format="PNG", compress_level=4)
        images.append({"index": item.index, "seed": item.seed, "png": base64.b64encode(buf.getvalue()).decode("ascii")})
    return json.dumps({
        "job": job_id, "worker": worker, "model_name": result.model_name, "engine": result.engine,
        "timings": result.timings, "warnings": list(result.warnings), "images": images,
    })


def decode_result(raw: bytes | str) -> StoredResult:
    data = json.loads(raw)
    return StoredResult(
        job_id=data["job"], worker=data["worker"], model_name=data["model_name"], engine=data["engine"],
        timings={k: float(v) for k, v in data["timings"].items()}, warnings=tuple(data["warnings"]),
        images=tuple((int(i["index"]), int(i["seed"]), base64.b64decode(i["png"])) for i in data["images"]),
    )


class Records:
    """HeyIm's records in one Redis database. Thread-safe (redis-py pools connections)."""

    def __init__(self, client: "redis.Redis", ttl_s: int = DEFAULT_TTL_S) -> None:
        self.r = client
        self.ttl_s = ttl_s

    # -- submitting ----------------------------------------------------------------------
    def create_batch(self, batch_id: str, jobs: Sequence[NewJob], *, name: str, source: str) -> list[str]:
        """Write the batch and its jobs (all queued) in one transaction; return the job ids."""
        now = time.time()
        ids = [f"{batch_id}-{i:05d}" for i in range(1, len(jobs) + 1)]
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}batch:{batch_id}", mapping={"name": name, "source": source, "created": now, "total": len(jobs)})
        for i, (job_id, job) in enumerate(zip(ids, jobs), start=1):
            key = f"{PREFIX}job:{job_id}"
            pipe.hset(key, mapping={
                "batch": batch_id, "index": i, "line": job.line, "request": json.dumps(job.request),
                "state": QUEUED, "attempts": 0, "created": now,
            })
            pipe.expire(key, self.ttl_s)
        if ids:
            pipe.rpush(f"{PREFIX}batch:{batch_id}:jobs", *ids)
        pipe.zadd(f"{PREFIX}batches", {batch_id: now})
        pipe.expire(f"{PREFIX}batch:{batch_id}", self.ttl_s)
        pipe.expire(f"{PREFIX}batch:{batch_id}:jobs", self.ttl_s)
        pipe.execute()
        return ids

    # -- the worker ----------------------------------------------------------------------
    def begin(self, job_id: str, worker: str) -> tuple[dict[str, Any], int] | None:
        """Mark a job running on ``worker``; return (request data, attempt number).

        None when there is nothing to do: the job is unknown (expired) or already finished
        (a duplicate delivery after its result was stored).
        """
        key = f"{PREFIX}job:{job_id}"
        raw = _hash(self.r.hgetall(key))
        if not raw or "request" not in raw:
            return None
        if raw.get("state") in FINISHED:
            return None
        if self.r.exists(f"{PREFIX}result:{job_id}"):
            self.r.hset(key, mapping={"state": DONE, "finished": time.time()})
            return None
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hset(key, mapping={"state": RUNNING, "worker": worker, "started": time.time(), "step": 0, "error": ""})
        attempts = int(pipe.execute()[0])
        return json.loads(raw["request"]), attempts

    def progress(self, job_id: str, step: int, total: int) -> None:
        self.r.hset(f"{PREFIX}job:{job_id}", mapping={"step": step, "total": total})

    def store_result(self, job_id: str, worker: str, result: "GenerationResult") -> bool:
        """Store the images unless another attempt already did; mark the job done.

        Returns False when a result was already there (this attempt's images are dropped).
        """
        stored = self.r.set(f"{PREFIX}result:{job_id}", encode_result(job_id, worker, result), nx=True, ex=self.ttl_s)
        self.r.hset(f"{PREFIX}job:{job_id}", mapping={"state": DONE, "finished": time.time(), "error": ""})
        return bool(stored)

    def fail(self, job_id: str, reason: str) -> None:
        """Mark a job failed for good, with the reason (unless a result exists: then it is done)."""
        key = f"{PREFIX}job:{job_id}"
        if self.r.exists(f"{PREFIX}result:{job_id}"):
            self.r.hset(key, mapping={"state": DONE, "finished": time.time()})
            return
        self.r.hset(key, mapping={"state": FAILED, "error": reason, "finished": time.time()})

    def requeued(self, job_id: str, note: str, *, count_attempt: bool = True) -> None:
        """The job goes back to the queue (an error to retry, or its worker stopping)."""
        key = f"{PREFIX}job:{job_id}"
        pipe = self.r.pipeline(transaction=True)
        if not count_attempt:
            pipe.hincrby(key, "attempts", -1)
        pipe.hset(key, mapping={"state": QUEUED, "error": note})
        pipe.execute()

    def heartbeat(self, worker: WorkerStatus) -> None:
        key = f"{PREFIX}worker:{worker.id}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={
            "host": worker.host, "model": worker.model, "device": worker.device, "state": worker.state,
            "job": worker.job, "jobs_done": worker.jobs_done, "last_seen": time.time(),
        })
        pipe.expire(key, WORKER_TTL_S)
        pipe.sadd(f"{PREFIX}workers", worker.id)
        pipe.execute()

    def worker_gone(self, worker_id: str) -> None:
        self.r.delete(f"{PREFIX}worker:{worker_id}")
        self.r.srem(f"{PREFIX}workers", worker_id)

    # -- watching and collecting ---------------------------------------------------------
    def batch_ids(self, limit: int = 20) -> list[str]:
        return [_text(b) for b in self.r.zrevrange(f"{PREFIX}batches", 0, limit - 1)]

    def job_ids(self, batch_id: str) -> list[str]:
        return [_text(j) for j in self.r.lrange(f"{PREFIX}batch:{batch_id}:jobs", 0, -1)]

    def batch(self, batch_id: str) -> BatchStatus | None:
        meta = _hash(self.r.hgetall(f"{PREFIX}batch:{batch_id}"))
        if not meta:
            return None
        ids = self.job_ids(batch_id)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"{PREFIX}job:{job_id}", "index", "line", "state", "attempts", "worker", "error", "step", "total")
        jobs = []
        for job_id, values in zip(ids, pipe.execute()):
            index, line, state, attempts, worker, error, step, total = (_text(v) if v is not None else "" for v in values)
            jobs.append(JobStatus(
                id=job_id, index=int(index or 0), line=int(line or 0), state=state or "expired",
                attempts=int(attempts or 0), worker=worker, error=error, step=int(step or 0), total=int(total or 0),
            ))
        return BatchStatus(
            id=batch_id, name=meta.get("name", ""), source=meta.get("source", ""),
            created=float(meta.get("created", 0)), total=int(meta.get("total", len(ids))), jobs=tuple(jobs),
        )

    def request_data(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(f"{PREFIX}job:{job_id}", "request")
        return json.loads(raw) if raw else None

    def result(self, job_id: str) -> StoredResult | None:
        raw = self.r.get(f"{PREFIX}result:{job_id}")
        return decode_result(raw) if raw else None

    def workers(self) -> list[WorkerStatus]:
        out = []
        for wid in sorted(_text(w) for w in self.r.smembers(f"{PREFIX}workers")):
            raw = _hash(self.r.hgetall(f"{PREFIX}worker:{wid}"))
            if not raw:  # its heartbeat expired: the worker stopped or died
                self.r.srem(f"{PREFIX}workers", wid)
                continue
            out.append(WorkerStatus(
                id=wid, host=raw.get("host", ""), model=raw.get("model", ""), device=raw.get("device", ""),
                state=raw.get("state", ""), job=raw.get("job", ""), jobs_done=int(raw.get("jobs_done", 0)),
                last_seen=float(raw.get("last_seen", 0)),
            ))
        return out

    def mark_imported(self, batch_id: str, consumer: str, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if ids:
            key = f"{PREFIX}batch:{batch_id}:imported:{consumer}"
            self.r.sadd(key, *ids)
            self.r.expire(key, self.ttl_s)

    def imported(self, batch_id: str, consumer: str) -> set[str]:
        return {_text(j) for j in self.r.smembers(f"{PREFIX}batch:{batch_id}:imported:{consumer}")}
