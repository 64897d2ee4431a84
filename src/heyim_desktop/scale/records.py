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
* ``running``: set of job ids marked running (what the lost-job reaper looks at).
* ``since``: when HeyIm first wrote to this Redis (a later value than a batch's id says
  the server lost its data in between).

Everything read back is treated as untrusted: job ids must have the form HeyIm gives them
(they become file names when collecting), malformed records and results are reported, never
a traceback, and a stored image's header is checked before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import redis

    from heyim_desktop.core.result import GenerationResult

from heyim_desktop.scale.errors import MalformedRecord

PREFIX = "heyim:"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)
#: How long batches, jobs and results stay in Redis after their last change.
DEFAULT_TTL_S = 14 * 24 * 3600
WORKER_TTL_S = 30
#: Batch ids are ``YYYYmmdd-HHMMSS-xxxxxx`` (local time, 6 hex digits); job ids add ``-NNNNN``.
BATCH_ID_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
JOB_ID_RE = re.compile(r"(\d{8}-\d{6}-[0-9a-f]{6})-(\d{5,6})")
#: A stored result is a few PNGs of at most the largest generation size; anything bigger is hostile.
MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_RESULT_IMAGES = 64


def is_batch_id(value: str) -> bool:
    return BATCH_ID_RE.fullmatch(value) is not None


def is_job_id(value: str, batch_id: str | None = None) -> bool:
    """Whether ``value`` is a job id HeyIm makes (of ``batch_id`` when given)."""
    m = JOB_ID_RE.fullmatch(value)
    return m is not None and (batch_id is None or m.group(1) == batch_id)


def batch_created(batch_id: str) -> float | None:
    """When a batch with this id was made (from the id itself), or None for other ids."""
    if not is_batch_id(batch_id):
        return None
    try:
        return time.mktime(time.strptime(batch_id[:15], "%Y%m%d-%H%M%S"))
    except (ValueError, OverflowError):
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _int(value: str | None, field: str) -> int:
    if value in (None, ""):
        return 0
    assert value is not None
    if len(value) > 20:
        raise MalformedRecord(f"{field} is not a number")
    try:
        return int(value)
    except ValueError:
        raise MalformedRecord(f"{field} is not a number ({value[:20]!r})") from None


def _float(value: str | None, field: str) -> float:
    if value in (None, ""):
        return 0.0
    assert value is not None
    try:
        number = float(value[:40])
    except ValueError:
        raise MalformedRecord(f"{field} is not a number ({value[:20]!r})") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise MalformedRecord(f"{field} is not a finite number")
    return number


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
        """A core GenerationResult, so front ends save it like a local generation.

        Each PNG's header is read first: it must be a PNG of the request's size, so a
        decompression bomb in Redis is refused before any pixel is decoded.
        Raises :class:`MalformedRecord` with the reason.
        """
        import warnings

        from PIL import Image

        from heyim_desktop.core.codec import request_from_data
        from heyim_desktop.core.result import GeneratedImage, GenerationResult

        try:
            request = request_from_data(request_data)
        except ValueError as exc:
            raise MalformedRecord(f"its request is not valid ({exc})") from None
        images = []
        for index, seed, png in self.images:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(io.BytesIO(png), formats=["PNG"]) as img:
                        if img.size != (request.width, request.height):
                            raise MalformedRecord(
                                f"image {index + 1} claims {img.size[0]}x{img.size[1]} pixels, "
                                f"not the requested {request.width}x{request.height}")
                        img.load()
                        images.append(GeneratedImage(image=img.convert("RGB"), seed=seed, index=index))
            except MalformedRecord:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise MalformedRecord(f"image {index + 1} claims more pixels than any generation makes "
                                      "(a decompression bomb); not decoded") from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise MalformedRecord(f"image {index + 1} is not a readable PNG ({exc})") from None
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
    """Parse a stored result, or raise :class:`MalformedRecord` saying what is wrong."""
    if len(raw) > MAX_RESULT_BYTES:
        raise MalformedRecord(f"the stored result is larger than {MAX_RESULT_BYTES // 2**20} MB")
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise MalformedRecord("the stored result is not a HeyIm result")
        if len(data["images"]) > MAX_RESULT_IMAGES:
            raise MalformedRecord(f"the stored result has more than {MAX_RESULT_IMAGES} images")
        return StoredResult(
            job_id=str(data["job"]), worker=str(data["worker"]), model_name=str(data["model_name"]),
            engine=str(data["engine"]), timings={str(k): float(v) for k, v in dict(data["timings"]).items()},
            warnings=tuple(str(w) for w in data["warnings"]),
            images=tuple((int(i["index"]), int(i["seed"]), base64.b64decode(i["png"], validate=True))
                         for i in data["images"]),
        )
    except MalformedRecord:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, binascii.Error) as exc:
        raise MalformedRecord(f"the stored result is malformed ({type(exc).__name__}: {str(exc)[:200]})") from None


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
        pipe.set(f"{PREFIX}since", now, nx=True)
        pipe.execute()
        return ids

    def since(self) -> float | None:
        """When HeyIm first wrote to this Redis (None: it holds no HeyIm data at all)."""
        raw = self.r.get(f"{PREFIX}since")
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    # -- the worker ----------------------------------------------------------------------
    def begin(self, job_id: str, worker: str, message_id: str = "") -> tuple[dict[str, Any], int] | None:
        """Mark a job running on ``worker``; return (request data, attempt number).

        None when there is nothing to do: the job is unknown (expired) or already finished
        (a duplicate delivery after its result was stored). ``message_id`` is the Redis id of
        the message being processed (the reaper checks it is still somewhere). A record that
        HeyIm did not write this way is marked failed and :class:`MalformedRecord` raised.
        """
        key = f"{PREFIX}job:{job_id}"
        raw = _hash(self.r.hgetall(key))
        if not raw:
            return None
        if raw.get("state") in FINISHED:
            return None
        if self.r.exists(f"{PREFIX}result:{job_id}"):
            self.r.hset(key, mapping={"state": DONE, "finished": time.time()})
            return None
        try:
            if "request" not in raw:
                raise MalformedRecord("it has no request")
            try:
                data = json.loads(raw["request"])
            except (ValueError, RecursionError):
                raise MalformedRecord("its request is not JSON") from None
            if not isinstance(data, dict):
                raise MalformedRecord("its request is not a JSON object")
            _int(raw.get("attempts"), "attempts")
        except MalformedRecord as exc:
            self.fail(job_id, f"The job's record in Redis is malformed: {exc}.")
            raise
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hset(key, mapping={"state": RUNNING, "worker": worker, "started": time.time(), "step": 0, "error": "",
                                "message": message_id})
        pipe.sadd(f"{PREFIX}running", job_id)
        attempts = int(pipe.execute()[0])
        return data, attempts

    def progress(self, job_id: str, step: int, total: int) -> None:
        self.r.hset(f"{PREFIX}job:{job_id}", mapping={"step": step, "total": total})

    def store_result(self, job_id: str, worker: str, result: "GenerationResult") -> bool:
        """Store the images unless another attempt already did; mark the job done.

        Returns False when a result was already there (this attempt's images are dropped).
        """
        stored = self.r.set(f"{PREFIX}result:{job_id}", encode_result(job_id, worker, result), nx=True, ex=self.ttl_s)
        self.r.hset(f"{PREFIX}job:{job_id}", mapping={"state": DONE, "finished": time.time(), "error": ""})
        self.r.srem(f"{PREFIX}running", job_id)
        return bool(stored)

    def fail(self, job_id: str, reason: str) -> None:
        """Mark a job failed for good, with the reason (unless a result exists: then it is done)."""
        key = f"{PREFIX}job:{job_id}"
        self.r.srem(f"{PREFIX}running", job_id)
        if not self.r.exists(key):
            return  # expired, or an id that was never a job: nothing to mark
        if self.r.exists(f"{PREFIX}result:{job_id}"):
            self.r.hset(key, mapping={"state": DONE, "finished": time.time()})
            return
        self.r.hset(key, mapping={"state": FAILED, "error": reason, "finished": time.time()})

    def bad_result(self, job_id: str, reason: str) -> None:
        """A stored result cannot be used (damaged or hostile): drop it and mark the job failed."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{PREFIX}result:{job_id}")
        pipe.srem(f"{PREFIX}running", job_id)
        pipe.execute()
        if self.r.exists(f"{PREFIX}job:{job_id}"):
            self.r.hset(f"{PREFIX}job:{job_id}", mapping={"state": FAILED, "error": reason, "finished": time.time()})

    def requeued(self, job_id: str, note: str, *, count_attempt: bool = True) -> None:
        """The job goes back to the queue (an error to retry, or its worker stopping)."""
        key = f"{PREFIX}job:{job_id}"
        pipe = self.r.pipeline(transaction=True)
        if not count_attempt:
            pipe.hincrby(key, "attempts", -1)
        pipe.hset(key, mapping={"state": QUEUED, "error": note})
        pipe.srem(f"{PREFIX}running", job_id)
        pipe.execute()

    def lost_candidates(self) -> list[tuple[str, str, str]]:
        """Running jobs whose worker has no live heartbeat: (job id, worker, message id).

        Whether the job's message still exists somewhere is the broker's to say
        (:func:`heyim_desktop.scale.broker.message_alive`).
        """
        ids = sorted(_text(j) for j in self.r.smembers(f"{PREFIX}running"))
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"{PREFIX}job:{job_id}", "state", "worker", "message")
        rows = pipe.execute()
        out: list[tuple[str, str, str]] = []
        stale: list[str] = []
        for job_id, (state, worker, message) in zip(ids, rows):
            if state is None or _text(state) != RUNNING:
                stale.append(job_id)
                continue
            worker_id = _text(worker or b"")
            if worker_id and self.r.exists(f"{PREFIX}worker:{worker_id}"):
                continue
            out.append((job_id, worker_id, _text(message or b"")))
        if stale:
            self.r.srem(f"{PREFIX}running", *stale)
        return out

    def claim_lost(self, job_id: str, worker: str) -> bool:
        """Mark a lost running job queued again, unless another reaper already did (atomic)."""
        key = f"{PREFIX}job:{job_id}"
        note = f"its worker {worker or '?'} was lost with the job's queue message; queued again"
        script = self.r.register_script(
            "if redis.call('hget', KEYS[1], 'state') == 'running' and "
            "redis.call('hget', KEYS[1], 'worker') == ARGV[1] then "
            "redis.call('hset', KEYS[1], 'state', 'queued', 'error', ARGV[2]); "
            "redis.call('srem', KEYS[2], ARGV[3]); return 1 end "
            "redis.call('srem', KEYS[2], ARGV[3]); return 0"
        )
        return bool(script(keys=[key, f"{PREFIX}running"], args=[worker, note, job_id]))

    def heartbeat(self, worker: WorkerStatus) -> None:
        key = f"{PREFIX}worker:{worker.id}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={
            "host": worker.host, "model": worker.model, "device": worker.device, "state": worker.state,
            "job": worker.job, "jobs_done": worker.jobs_done, "last_seen": time.time(),
        })
        pipe.expire(key, WORKER_TTL_S)
        pipe.sadd(f"{PREFIX}workers", worker.id)
        pipe.set(f"{PREFIX}since", time.time(), nx=True)
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
        """The batch and its jobs' states; a malformed job record shows as failed, with why."""
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
            try:
                if not is_job_id(job_id, batch_id if is_batch_id(batch_id) else None):
                    raise MalformedRecord("its id is not one HeyIm makes")
                if state not in ("", QUEUED, RUNNING, DONE, FAILED):
                    raise MalformedRecord(f"unknown state {state[:20]!r}")
                jobs.append(JobStatus(
                    id=job_id, index=_int(index, "index"), line=_int(line, "line"), state=state or "expired",
                    attempts=_int(attempts, "attempts"), worker=worker[:200], error=error[:2000],
                    step=_int(step, "step"), total=_int(total, "total"),
                ))
            except MalformedRecord as exc:
                jobs.append(JobStatus(id=job_id[:80], index=0, line=0, state=FAILED, attempts=0, worker="",
                                      error=f"The job's record in Redis is malformed: {exc}.", step=0, total=0))
        try:
            created = _float(meta.get("created"), "created")
        except MalformedRecord:
            created = 0.0
        try:
            batch_total = _int(meta.get("total"), "total") if meta.get("total") else len(ids)
        except MalformedRecord:
            batch_total = len(ids)
        return BatchStatus(
            id=batch_id, name=meta.get("name", "")[:200], source=meta.get("source", "")[:200],
            created=created, total=batch_total, jobs=tuple(jobs),
        )

    def request_data(self, job_id: str) -> dict[str, Any] | None:
        """The job's request as codec data; :class:`MalformedRecord` when it is not JSON."""
        raw = self.r.hget(f"{PREFIX}job:{job_id}", "request")
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise MalformedRecord("its request is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedRecord("its request is not a JSON object")
        return data

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
            try:
                jobs_done, last_seen = _int(raw.get("jobs_done"), "jobs_done"), _float(raw.get("last_seen"), "last_seen")
            except MalformedRecord:
                jobs_done, last_seen = 0, 0.0
            out.append(WorkerStatus(
                id=wid[:200], host=raw.get("host", "")[:200], model=raw.get("model", "")[:200],
                device=raw.get("device", "")[:200], state=raw.get("state", "")[:40], job=raw.get("job", "")[:80],
                jobs_done=jobs_done, last_seen=last_seen,
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
