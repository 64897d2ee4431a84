"""The long-lived queue worker: loads its model once, then renders jobs one at a time.

One Dramatiq worker thread owns the :class:`EngineHost` (the core's rule: one thread per
engine); the main thread sends heartbeats and handles signals. What happens to a job:

* finished: the images are stored under the job id (first attempt wins) and the job is done;
* a user's problem (bad request, a model this worker lacks, an unreadable image): failed
  with the reason, never retried;
* an unexpected error or a time-out: retried on any worker, at most ``MAX_ERROR_RETRIES`` times;
* the worker is stopped (Ctrl+C, SIGTERM): the job is cancelled within a step and requeued;
* the engine process dies (a crash, an out-of-memory kill): retried like an unexpected error,
  and the next job starts a fresh engine process;
* the worker dies (SIGKILL, power off): Dramatiq's dead-worker check requeues it once the
  heartbeat is ``dead_after_s`` old; after ``MAX_ATTEMPTS`` starts the job is failed;
* the worker is gone and the job's message with it (a Redis restart at the wrong moment):
  every live worker's reaper compares "running" records with live heartbeats and sends the
  job again when its message is nowhere (:meth:`QueueWorker.reap`);
* a poison message (not one HeyIm sends, or a job record HeyIm did not write): failed on the
  first attempt with the reason, and dead-lettered.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import EngineStopped, ModelError, OutOfMemory, UserFacingError
from heyim_desktop.core.result import Progress
from heyim_desktop.scale import broker as qb
from heyim_desktop.scale.errors import MalformedRecord, PoisonMessage
from heyim_desktop.scale.records import Records, WorkerStatus, is_job_id

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    model: str
    device: str = "auto"
    precision: str = "auto"
    #: how Z-Image / FLUX.2 [klein] / SD 3.5 models use memory (core.devices.MEMORY_MODES)
    memory: str = "auto"
    dead_after_s: float = qb.DEFAULT_DEAD_AFTER_S
    job_timeout_s: float = qb.DEFAULT_JOB_TIMEOUT_S
    #: How often an idle worker polls the queue (ms): the latency between jobs.
    poll_ms: int = 100
    worker_id: str = ""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def model_names(ref: str) -> set[str]:
    """Names a job may use for the worker's model reference ``ref``."""
    names = {ref}
    if ref != "demo":
        names.add(Path(ref).expanduser().name)
    return names


class QueueWorker:
    def __init__(self, config: WorkerConfig) -> None:
        from heyim_desktop.core.host import EngineHost
        from heyim_desktop.core.process.remote import ProcessLoader
        from heyim_desktop.scale.connection import open_redis

        self.config = replace(config, worker_id=config.worker_id or default_worker_id())
        self.id = self.config.worker_id
        self.records = Records(open_redis(config.url))

        # The model runs in an engine process, so a crash there costs one attempt, not the worker.
        engines = ProcessLoader(device=config.device, precision=config.precision, memory=config.memory)
        self.host = EngineHost(engines, default_model=config.model, upscalers=engines.upscaler)
        self._stop = threading.Event()
        self._cancel: CancelToken | None = None
        self._lock = threading.Lock()
        self.state, self.job, self.jobs_done = "starting", "", 0
        self._dramatiq: Any = None
        self._broker: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGINT/SIGTERM when run from the main thread)."""
        import dramatiq

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, frame: self.stop())
        self._beat("loading")
        try:
            # Loaded here, before Dramatiq's thread starts; from then on only that thread uses the host.
            self.host.ensure_model(self.config.model)
        except (ModelError, EngineStopped) as exc:
            # Stay up and fail each job with the reason, so the submitter sees it in `batch status`.
            log.error("worker %s: %s (its jobs will fail with this reason)", self.id, exc)
        broker = qb.make_broker(self.records.r, dead_after_s=self.config.dead_after_s,
                                job_timeout_s=self.config.job_timeout_s)
        qb.declare_render_actor(broker, self.render)
        self._broker = broker
        broker.emit_after("process_boot")  # starts the time-limit watchdog, as Dramatiq's CLI does
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=self.config.poll_ms)
        worker.queue_prefetch = 1  # take one job at a time: the rest stays for other machines
        worker.start()
        self._dramatiq = worker
        engine = self.host.engine
        log.info("worker %s serving %s on %s", self.id, self.config.model, engine.name if engine else "no model")
        self._beat("idle")
        try:
            while not self._stop.wait(HEARTBEAT_S):
                self._beat()
                self.reap()
        finally:
            self._beat("stopping")
            worker.stop(timeout=60_000)
            broker.close()
            self.host.unload()
            self.records.worker_gone(self.id)
            log.info("worker %s stopped after %d job(s)", self.id, self.jobs_done)

    def stop(self) -> None:
        """Stop taking jobs; cancel the running one (it goes back to the queue)."""
        with self._lock:
            if self._cancel is not None:
                self._cancel.cancel()
        self._stop.set()

    def _beat(self, state: str | None = None) -> None:
        if state is not None:
            self.state = state
        engine = self.host.engine
        try:
            self.records.heartbeat(WorkerStatus(
                id=self.id, host=socket.gethostname(), model=self.config.model,
                device=engine.name if engine else "", state=self.state, job=self.job,
                jobs_done=self.jobs_done, last_seen=time.time(),
            ))
        except Exception as exc:  # noqa: BLE001 - Redis blips must not kill the worker; Dramatiq reconnects too
            log.warning("heartbeat failed: %s", exc)

    def reap(self) -> list[str]:
        """Send again the running jobs whose worker is gone and whose message was lost.

        Dramatiq itself requeues the messages a dead worker held; this covers the rest (a
        message lost in a Redis restart): a "running" record whose worker has no live
        heartbeat and whose message is in no queue or live ack set goes back to the queue.
        Several workers may reap at once: claiming a job is atomic, so it is sent once.
        """
        sent: list[str] = []
        try:
            for job_id, worker, message_id in self.records.lost_candidates():
                if not is_job_id(job_id) or qb.message_alive(self.records.r, message_id):
                    continue
                if self.records.claim_lost(job_id, worker):
                    qb.send_job(self._broker, job_id)
                    log.warning("job %s: its worker %s is gone and its queue message was lost; queued again",
                                job_id, worker or "?")
                    sent.append(job_id)
        except Exception as exc:  # noqa: BLE001 - a Redis blip: try again on the next beat
            log.warning("lost-job check failed: %s", exc)
        return sent

    # -- one job (on Dramatiq's worker thread) -------------------------------------------
    def render(self, *args: Any, **kwargs: Any) -> None:
        """The actor: one HeyIm job id, nothing else (anything else is a poison message)."""
        from dramatiq import Retry
        from dramatiq.middleware import TimeLimitExceeded

        if kwargs or len(args) != 1 or not isinstance(args[0], str) or not is_job_id(args[0]):
            reason = f"not a message HeyIm sends (arguments {str(args)[:120]}, keyword arguments {sorted(kwargs)[:10]})"
            log.error("poison message dead-lettered: %s", reason)
            if len(args) == 1 and isinstance(args[0], str) and is_job_id(args[0]):
                self.records.fail(args[0], f"Its queue message was malformed: {reason}.")
            raise PoisonMessage(reason)
        job_id = args[0]
        try:
            begun = self.records.begin(job_id, self.id, qb.current_message_id())
        except MalformedRecord as exc:
            log.error("job %s failed and dead-lettered: its record in Redis is malformed: %s", job_id, exc)
            raise PoisonMessage(f"job {job_id}: malformed record: {exc}") from None
        if begun is None:
            log.info("job %s: already finished or expired; skipped", job_id)
            return
        data, attempt = begun
        if attempt > qb.MAX_ATTEMPTS:
            self.records.fail(job_id, f"Gave up after {attempt - 1} attempts: the workers rendering it stopped or died.")
            return
        cancel = CancelToken()
        with self._lock:
            if self._stop.is_set():
                cancel.cancel()
            self._cancel = cancel
        self.job = job_id
        self._beat("rendering")
        try:
            result = self._generate(job_id, data, cancel)
        except Cancelled:
            self.records.requeued(job_id, "", count_attempt=False)
            log.info("job %s: worker stopping, back to the queue", job_id)
            raise Retry(delay=0) from None
        except (UserFacingError, ValueError) as exc:  # ValueError: a malformed record
            if isinstance(exc, (OutOfMemory, EngineStopped)) and self._should_retry(job_id, exc):
                raise  # another worker (or a fresh engine process) may get through
            log.warning("job %s failed: %s", job_id, exc)
            self.records.fail(job_id, str(exc))
            return
        except TimeLimitExceeded:
            if self._should_retry(job_id, f"took longer than the job time limit ({self.config.job_timeout_s:g}s)"):
                raise
            return
        except Exception as exc:
            log.exception("job %s: unexpected error", job_id)
            if self._should_retry(job_id, f"Unexpected error: {type(exc).__name__}: {exc}"):
                raise
            return
        finally:
            with self._lock:
                self._cancel = None
            self.job = ""
            self._beat("idle")
        if self.records.store_result(job_id, self.id, result):
            self.jobs_done += 1
            log.info("job %s done in %.2fs (attempt %d)", job_id, result.timings.get("total", 0.0), attempt)
        else:
            log.info("job %s: another attempt stored its result first; this one is dropped", job_id)

    def _should_retry(self, job_id: str, reason: object) -> bool:
        """Requeue-or-fail for errors that another attempt may not hit; True: re-raise to retry."""
        if qb.retries_so_far() >= qb.MAX_ERROR_RETRIES:
            self.records.fail(job_id, str(reason))
            return False  # returning normally acks the message: no further retries
        self.records.requeued(job_id, f"retrying after: {reason}")
        return True

    def _generate(self, job_id: str, data: dict[str, Any], cancel: CancelToken) -> Any:
        from heyim_desktop.core.codec import request_from_data

        request = request_from_data(data)
        if request.controlnets:  # names from the queue, looked up in this machine's library
            from heyim_desktop.models.controlnets import ControlNetLibrary, resolve_controlnet_names
            from heyim_desktop.models.library import ModelLibrary

            request = resolve_controlnet_names(request, ControlNetLibrary(ModelLibrary()))
        wanted = request.model
        if wanted and wanted not in model_names(self.config.model) and not (
            self.host.engine is not None and wanted == self.host.engine.model_name
        ):
            raise ModelError(f"Model {wanted!r} is not on worker {self.id} (it serves {self.config.model!r}).")
        engine = self.host.ensure_model(self.config.model)
        return engine.generate(request, progress=progress_reporter(self.records, job_id), cancel=cancel)


class ProgressRecords(Protocol):
    def progress(self, job_id: str, step: int, total: int) -> None: ...


def progress_reporter(records: ProgressRecords, job_id: str,
                      every_s: float = PROGRESS_EVERY_S) -> Callable[[Progress], None]:
    """Write a job's progress to its record at most every ``every_s`` seconds, and at its last step.

    The engine's :class:`Progress` already counts the steps that really run for the whole job
    (every image; image-to-image only ``strength`` of them), so they go to Redis unchanged, as
    the window shows them.
    """
    last: float | None = None  # the first step always lands (monotonic time may start near 0 after a boot)

    def on_progress(p: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if last is None or now - last >= every_s or p.step >= p.total:
            last = now
            try:
                records.progress(job_id, p.step, p.total)
            except Exception as exc:  # noqa: BLE001 - progress is a bonus; the job goes on
                log.debug("progress report failed: %s", exc)

    return on_progress


def run_worker(config: WorkerConfig) -> QueueWorker:
    worker = QueueWorker(config)
    worker.run()
    return worker
