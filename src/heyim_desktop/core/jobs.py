"""The generation queue: jobs wait here until the one worker that owns the engine takes them.

The queue is plain threads and locks (no Qt), so the window, the menu bar, the local API
and the headless server all submit to the same kind of queue and see the same job states.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, NewType

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GenerationResult, Progress

if TYPE_CHECKING:
    from heyim_desktop.core.upscale_job import UpscaleRequest, UpscaleResult

log = logging.getLogger(__name__)

JobId = NewType("JobId", int)


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(eq=False)
class Job:
    """One submitted request and everything that happens to it. Mutated only by the queue."""

    id: JobId
    #: A generation, or an upscale (core/upscale_job.py), which needs no generation model.
    request: "GenerationRequest | UpscaleRequest"
    source: str = "app"
    state: JobState = JobState.QUEUED
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: Progress | None = None
    result: "GenerationResult | UpscaleResult | None" = None
    #: Where the images were saved (history entry ids or file paths), set by the sink.
    saved: tuple[object, ...] = ()
    error: BaseException | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished_at: float | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (done, failed or cancelled)."""
        return self._done.wait(timeout)

    @property
    def error_message(self) -> str | None:
        if self.error is None:
            return None
        from heyim_desktop.core.errors import UserFacingError

        if isinstance(self.error, UserFacingError):
            return str(self.error)
        return f"Unexpected error: {type(self.error).__name__}: {self.error}"


JobListener = Callable[[Job], None]


class QueueClosed(Exception):
    pass


class JobQueue:
    """FIFO of jobs with removal, cancellation and state listeners. Thread-safe."""

    def __init__(self, max_pending: int = 1000) -> None:
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._ids = itertools.count(1)
        self._listeners: list[JobListener] = []
        self._closed = False
        self._max_pending = max_pending
        self.last_finished: Job | None = None

    # -- observers -----------------------------------------------------------------------
    def add_listener(self, listener: JobListener) -> None:
        """``listener(job)`` runs on the thread that changed the job: keep it short."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: JobListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, job: Job) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(job)
            except Exception:  # a broken observer must not stop the queue
                log.exception("job listener failed")

    # -- submitters ----------------------------------------------------------------------
    def submit(self, request: "GenerationRequest | UpscaleRequest", source: str = "app") -> Job:
        with self._lock:
            if self._closed:
                raise QueueClosed("the generation queue is shut down")
            if len(self._pending) >= self._max_pending:
                from heyim_desktop.core.errors import UserFacingError

                raise UserFacingError(f"The queue is full ({self._max_pending} jobs waiting).")
            job = Job(id=JobId(next(self._ids)), request=request, source=source)
            self._pending.append(job)
            self._lock.notify_all()
        self._notify(job)
        return job

    def pending(self) -> list[Job]:
        with self._lock:
            return list(self._pending)

    @property
    def running(self) -> Job | None:
        with self._lock:
            return self._running

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + (1 if self._running else 0)

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            if self._running is not None and self._running.id == job_id:
                return self._running
            return next((j for j in self._pending if j.id == job_id), None)

    def remove(self, job_id: int) -> bool:
        """Take a waiting job out of the queue (it ends as cancelled). False if not waiting."""
        with self._lock:
            job = next((j for j in self._pending if j.id == job_id), None)
            if job is None:
                return False
            self._pending.remove(job)
        self._finish(job, JobState.CANCELLED)
        return True

    def cancel(self, job_id: int) -> bool:
        """Cancel a job: a waiting one is removed, the running one stops within a step."""
        if self.remove(job_id):
            return True
        with self._lock:
            job = self._running if self._running is not None and self._running.id == job_id else None
        if job is None:
            return False
        job.cancel.cancel()
        return True

    def cancel_running(self) -> bool:
        with self._lock:
            job = self._running
        if job is None:
            return False
        job.cancel.cancel()
        return True

    def clear(self) -> int:
        """Remove every waiting job; the running one goes on."""
        with self._lock:
            jobs = list(self._pending)
            self._pending.clear()
        for job in jobs:
            self._finish(job, JobState.CANCELLED)
        return len(jobs)

    def close(self) -> None:
        """Refuse new jobs, drop waiting ones, cancel the running one, wake the worker."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self.clear()
        self.cancel_running()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the worker ----------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> Job | None:
        """Block until a job is waiting (or the queue closes); mark it running and return it."""
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._pending and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._lock.wait(remaining)
            if self._closed:
                return None
            job = self._pending.popleft()
            job.state = JobState.RUNNING
            job.started = time.time()
            self._running = job
        self._notify(job)
        return job

    def report_progress(self, job: Job, progress: Progress) -> None:
        job.progress = progress
        self._notify(job)

    def finish(self, job: Job, *, result: "GenerationResult | UpscaleResult | None" = None, error: BaseException | None = None,
               cancelled: bool = False, saved: tuple[object, ...] = ()) -> None:
        if cancelled:
            state = JobState.CANCELLED
        elif error is not None:
            state = JobState.FAILED
        else:
            state = JobState.DONE
        job.result = result
        job.error = error
        job.saved = saved
        with self._lock:
            if self._running is job:
                self._running = None
        self._finish(job, state)

    def _finish(self, job: Job, state: JobState) -> None:
        job.state = state
        job.finished_at = time.time()
        with self._lock:
            self.last_finished = job
        job._done.set()
        self._notify(job)
