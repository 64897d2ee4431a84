"""Submitting batches, watching them and collecting their images (CLI and desktop app).

Nothing here needs torch: a laptop can submit to and collect from a farm of GPU boxes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from heyim_desktop.scale.errors import MalformedRecord, UnknownBatch
from heyim_desktop.scale.records import DONE, BatchStatus, NewJob, Records, batch_created, is_job_id

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GenerationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Collected:
    """What one collect pass did: files (or history entries) written, and what is not done."""

    saved: tuple[Any, ...]
    already: int
    failed: tuple[tuple[str, str], ...]  # (job id, reason)
    pending: int


def new_batch_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _records(url: str) -> Records:
    from heyim_desktop.scale.connection import open_redis

    return Records(open_redis(url))


def submit_jobs(url: str, jobs: Sequence[NewJob], *, name: str = "", source: str = "cli",
                records: Records | None = None) -> Submitted:
    """Write the batch's records, then queue one message per job."""
    from heyim_desktop.scale.broker import make_broker, send_job

    if not jobs:
        raise ValueError("no jobs to submit")
    records = records or _records(url)
    batch_id = new_batch_id()
    ids = records.create_batch(batch_id, jobs, name=name, source=source)
    broker = make_broker(records.r)
    for job_id in ids:
        send_job(broker, job_id)
    log.info("batch %s: %d job(s) queued", batch_id, len(ids))
    return Submitted(batch_id, tuple(ids))


def submit_requests(url: str, requests: Sequence["GenerationRequest"], *, name: str = "", source: str = "app",
                    records: Records | None = None) -> Submitted:
    """Send requests to the queue (the desktop app's path): one job per image.

    A request for N images becomes N jobs with seeds seed, seed+1, ... (the same images a
    local run makes), so several machines share it.
    """
    from heyim_desktop.core.codec import request_to_data

    jobs = []
    for request in requests:
        request = request.with_seed()
        for seed in request.image_seeds():
            jobs.append(NewJob(request=request_to_data(request.replace(seed=seed, count=1))))
    return submit_jobs(url, jobs, name=name or f"{len(jobs)} image(s) from {socket.gethostname()}", source=source,
                       records=records)


def submit_file(url: str, path: str | Path) -> Submitted:
    from heyim_desktop.scale.batchfile import read_batch_file

    jobs = read_batch_file(path)  # every line checked before the queue is touched
    return submit_jobs(url, jobs, name=Path(path).name, source="cli")


def batch_status(url: str, batch_id: str, records: Records | None = None) -> BatchStatus:
    records = records or _records(url)
    status = records.batch(batch_id)
    if status is None:
        raise UnknownBatch(_why_unknown(records, batch_id))
    return status


def _why_unknown(records: Records, batch_id: str) -> str:
    """Why a batch is not on the queue: expired, never submitted, or the server lost its data."""
    shown = batch_id if len(batch_id) <= 80 else batch_id[:80] + "..."
    created = batch_created(batch_id)
    if created is None:
        return f"No batch {shown!r} on this queue (never submitted, or expired)."
    if time.time() - created > records.ttl_s:
        return f"No batch {shown!r} on this queue: it expired (batches are kept {records.ttl_s // 86400} days)."
    since = records.since()
    if since is None or since > created + 1:
        return (f"No batch {shown!r} on this queue: the queue's Redis server has lost its data since the batch "
                "was submitted (it was restarted without persistence, or flushed). Submit the batch again, and give "
                "the render farm's Redis persistence: `appendonly yes` in redis.conf.")
    return f"No batch {shown!r} on this queue (never submitted to this server, or expired)."


def wait_for_batch(url: str, batch_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0,
                   on_status: Callable[[BatchStatus], None] | None = None) -> BatchStatus:
    """Poll until every job is done or failed (or ``timeout_s`` passes); return the last status."""
    records = _records(url)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = batch_status(url, batch_id, records)
        if on_status:
            on_status(status)
        if status.finished or (deadline is not None and time.monotonic() >= deadline):
            return status
        time.sleep(poll_s)  # polling Redis: there is nothing to block on across machines


def _scan(records: Records, batch_id: str, skip: set[str]) -> tuple[list[str], list[tuple[str, str]], int]:
    status = batch_status("", batch_id, records)
    done, failed = [], []
    for j in status.jobs:
        if not is_job_id(j.id, batch_id):
            # Its id becomes a file name: only the ids HeyIm makes for this batch are used.
            failed.append((j.id[:80], "not a job id HeyIm makes for this batch; skipped"))
        elif j.state == DONE and j.id not in skip:
            done.append(j.id)
        elif j.state == "failed":
            failed.append((j.id, j.error))
    pending = sum(1 for j in status.jobs if j.state not in (DONE, "failed"))
    return done, failed, pending


def _stored_result(records: Records, job_id: str) -> "tuple[GenerationResult, str] | None":
    """A finished job's result, checked; a damaged or hostile one marks the job failed (MalformedRecord)."""
    try:
        stored, data = records.result(job_id), records.request_data(job_id)
        if stored is None or data is None:
            return None  # expired between the scan and now
        return stored.to_result(data), stored.worker
    except MalformedRecord as exc:
        reason = f"Its stored result cannot be used: {exc}."
        log.warning("job %s: %s", job_id, reason)
        records.bad_result(job_id, reason)
        raise MalformedRecord(reason) from None


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, checked to stay inside ``folder`` (no separators, no links out)."""
    target = folder / name
    if Path(name).name != name or name in ("", ".", "..") or target.resolve().parent != folder.resolve():
        raise MalformedRecord(f"the file name {name[:80]!r} would leave the output folder")
    return target


def collect(url: str, batch_id: str, out_dir: str | Path) -> Collected:
    """Write each finished job's images as ``<job id>.png`` (``<job id>-<n>.png`` for several).

    Each PNG carries the same A1111 ``parameters`` and HeyIm settings as a local generation.
    Collecting again rewrites the same files: never two images for one job. Only job ids
    HeyIm makes for this batch become file names, and every path is checked to stay in
    ``out_dir``; a damaged result is marked failed and reported, the others still written.
    """
    from heyim_desktop.core.metadata import format_parameters
    from heyim_desktop.core.output import write_png_atomic

    records = _records(url)
    out = Path(out_dir).expanduser()
    done, failed, pending = _scan(records, batch_id, set())
    saved: list[Path] = []
    already = 0
    for job_id in done:
        try:
            got = _stored_result(records, job_id)
            if got is None:
                continue
            result, worker = got
            targets = [_inside(out, f"{job_id}.png" if len(result.images) == 1 else f"{job_id}-{item.index + 1}.png")
                       for item in result.images]
        except MalformedRecord as exc:
            failed.append((job_id, str(exc)))
            continue
        for item, target in zip(result.images, targets):
            if target.exists():
                already += 1
                continue
            request = result.request
            params = format_parameters(request, item.seed, result.model_name, model_hash=result.model_hash,
                                   extra=dict(result.parameters_extra))
            settings = dict(request.settings(), seed=item.seed, model_name=result.model_name, engine=result.engine,
                            queue_job=job_id, worker=worker)
            saved.append(write_png_atomic(item.image, target, params, settings, overwrite=True))
    return Collected(tuple(saved), already, tuple(failed), pending)


def history_consumer_id(store: Any) -> str:
    """Which history a batch was imported into (so importing twice adds nothing)."""
    root = getattr(store, "root", None) or getattr(store, "path", None) or id(store)
    key = f"{socket.gethostname()}:{Path(str(root)).expanduser().resolve() if root else root}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def collect_into_history(url: str, batch_id: str, store: Any, records: Records | None = None) -> Collected:
    """Add each finished job's images to the desktop app's history store, once.

    ``store`` is a :class:`heyim_desktop.store.HistoryStore`; entries get the source
    ``"queue <batch id>"``. Jobs already imported into this history are skipped,
    so the app may call this on every poll.
    """
    from heyim_desktop.core.jobs import Job, JobId

    records = records or _records(url)
    consumer = history_consumer_id(store)
    done, failed, pending = _scan(records, batch_id, records.imported(batch_id, consumer))
    saved: list[Any] = []
    failed = list(failed)
    for job_id in done:
        try:
            got = _stored_result(records, job_id)
        except MalformedRecord as exc:
            failed.append((job_id, str(exc)))
            continue
        if got is None:
            continue
        result = got[0]
        # A stand-in job only to tell the history where the images came from.
        entries = store.save_result(result, job=Job(id=JobId(0), request=result.request, source=f"queue {batch_id}"))
        saved.extend(entries)
        records.mark_imported(batch_id, consumer, [job_id])
    already = len(records.imported(batch_id, consumer)) - len(done)
    return Collected(tuple(saved), max(0, already), tuple(failed), pending)


class RemoteQueue:
    """The desktop app's side of a remote queue: submit, then poll finished images into history.

    Not thread-safe and blocking on the network: the app owns one and calls it from one
    non-UI thread (e.g. a timer that hands off to a worker). ``open_batches`` may be saved
    and restored to keep importing across restarts.
    """

    def __init__(self, url: str, store: Any, open_batches: Sequence[str] = ()) -> None:
        from heyim_desktop.scale.connection import check_url

        self.url = check_url(url)
        self.store = store
        self.open_batches = list(open_batches)
        self._records: Records | None = None

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = _records(self.url)
        return self._records

    def submit(self, requests: Sequence["GenerationRequest"], name: str = "") -> Submitted:
        submitted = submit_requests(self.url, requests, name=name, records=self.records)
        self.open_batches.append(submitted.batch_id)
        return submitted

    def poll(self) -> Collected:
        """Import what finished since the last poll; batches with nothing left are closed."""
        saved: list[Any] = []
        failed: list[tuple[str, str]] = []
        pending = already = 0
        for batch_id in list(self.open_batches):
            try:
                got = collect_into_history(self.url, batch_id, self.store, records=self.records)
            except UnknownBatch:  # expired on the server
                self.open_batches.remove(batch_id)
                continue
            saved += got.saved
            pending += got.pending
            already += got.already
            if got.pending == 0:
                failed += got.failed  # reported once, when the batch closes
                self.open_batches.remove(batch_id)
        return Collected(tuple(saved), already, tuple(failed), pending)
