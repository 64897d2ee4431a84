"""The engine's owner: loads models on demand, one at a time, and runs jobs from a queue.

Exactly one thread calls an :class:`EngineHost` (the GUI's QThread worker, or the headless
server's worker thread). Switching models closes the old engine before the new one loads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from heyim_desktop.core.cancel import Cancelled
from heyim_desktop.core.engine import Engine
from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.core.result import GenerationResult, Progress
from heyim_desktop.core.upscale_job import UpscaleRequest, UpscaleResult, run_upscale_job

log = logging.getLogger(__name__)

#: Turns a model reference (a path, a library name, "demo") into a loaded engine.
EngineLoader = Callable[[str], Engine]
#: Starts an engine process without a model, for upscale jobs while no model is loaded
#: (:meth:`ProcessLoader.upscaler`); what it returns has ``upscale``, ``close`` and ``stopped``.
UpscalerStarter = Callable[[], Any]


class ResultSink(Protocol):
    """Where finished images go (the history store, or a folder). Returns what it saved."""

    def __call__(self, result: "GenerationResult | UpscaleResult", job: Job) -> tuple[object, ...]: ...


class HostListener(Protocol):
    def model_loading(self, ref: str) -> None: ...

    def model_ready(self, ref: str, engine: Engine, seconds: float) -> None: ...

    def model_failed(self, ref: str, error: BaseException) -> None: ...


def engine_stopped(engine: Engine) -> bool:
    """Whether ``engine`` can no longer run jobs (an engine process that died or was killed)."""
    return bool(getattr(engine, "stopped", False))


class EngineHost:
    """``upscalers``: with engine processes, upscale jobs run in the loaded model's process, or
    in a model-less one this starts (kept until a model loads or the host unloads); without it
    they run in this process (an in-process engine, the CLI)."""

    def __init__(self, loader: EngineLoader, default_model: str | None = None, *,
                 upscalers: UpscalerStarter | None = None) -> None:
        self._loader = loader
        self._upscalers = upscalers
        #: The model-less engine process upscale jobs ran in while no model was loaded.
        self.upscaler: Any = None
        self.default_model = default_model
        self.engine: Engine | None = None
        self.model_ref: str | None = None
        #: The SDXL refiner of the last job that asked for one, kept beside the base model.
        self.refiner: Engine | None = None
        self.refiner_ref: str | None = None
        self.listener: HostListener | None = None

    def ensure_model(self, ref: str | None) -> Engine:
        ref = ref or self.default_model
        if not ref:
            from heyim_desktop.core.errors import ModelError

            raise ModelError("No model is selected. Add a model folder, download one, or try the demo model.")
        if self.engine is not None and ref == self.model_ref and not engine_stopped(self.engine):
            return self.engine
        self.unload()
        if self.listener:
            self.listener.model_loading(ref)
        t0 = time.perf_counter()
        try:
            engine = self._loader(ref)
        except BaseException as exc:
            if self.listener:
                self.listener.model_failed(ref, exc)
            raise
        self.engine, self.model_ref = engine, ref
        seconds = time.perf_counter() - t0
        log.info("model %s ready in %.2fs (%s)", ref, seconds, engine.name)
        if self.listener:
            self.listener.model_ready(ref, engine, seconds)
        return engine

    def ensure_refiner(self, ref: str) -> Engine:
        """The refiner engine for ``ref``, loaded (with the same loader) beside the base model."""
        if self.refiner is not None and ref == self.refiner_ref:
            return self.refiner
        self.unload_refiner()
        t0 = time.perf_counter()
        engine = self._loader(ref)  # a failure fails the job, which says why
        self.refiner, self.refiner_ref = engine, ref
        log.info("refiner %s ready in %.2fs (%s)", ref, time.perf_counter() - t0, engine.name)
        return engine

    def unload_refiner(self) -> None:
        if self.refiner is not None:
            log.info("unloading refiner %s", self.refiner_ref)
            self.refiner.close()
        self.refiner, self.refiner_ref = None, None

    def unload_upscaler(self) -> None:
        """End the model-less upscale process, if one runs (a loaded model's process takes over)."""
        if self.upscaler is not None:
            log.info("ending the upscale engine process")
            self.upscaler.close()
        self.upscaler = None

    def _upscale(self, request: UpscaleRequest, progress: Callable[[Progress], None], job: Job) -> UpscaleResult:
        engine = self.engine
        if engine is not None and not engine_stopped(engine) and getattr(engine, "runs_upscales", False):
            # The loaded model's process runs it; the model stays loaded and untouched.
            result: UpscaleResult = engine.upscale(request, progress=progress, cancel=job.cancel)  # type: ignore[attr-defined]
            return result
        if self._upscalers is None:
            return run_upscale_job(request, progress=progress, cancel=job.cancel)
        if self.upscaler is None or engine_stopped(self.upscaler):
            self.upscaler = self._upscalers()
            job.cancel.raise_if_cancelled()
        result = self.upscaler.upscale(request, progress=progress, cancel=job.cancel)
        return result

    @property
    def loaded_ref(self) -> str | None:
        """The model that is loaded and usable now (None once its engine process died)."""
        if self.engine is None or engine_stopped(self.engine):
            return None
        return self.model_ref

    def unload(self) -> None:
        self.unload_upscaler()
        self.unload_refiner()
        if self.engine is not None:
            log.info("unloading %s", self.model_ref)
            self.engine.close()
        self.engine, self.model_ref = None, None

    def run_job(self, queue: JobQueue, job: Job, sink: ResultSink | None = None) -> None:
        """Run one taken job to its end; every outcome is recorded on the job, nothing raises."""
        try:
            job.cancel.raise_if_cancelled()

            def on_progress(p: Progress) -> None:
                queue.report_progress(job, p)

            result: GenerationResult | UpscaleResult
            if isinstance(job.request, UpscaleRequest):  # no generation model needed: the loaded one stays
                result = self._upscale(job.request, on_progress, job)
            else:
                engine = self.ensure_model(job.request.model)
                job.cancel.raise_if_cancelled()
                if job.request.refiner and not getattr(engine, "loads_refiner_itself", False):
                    refiner = self.ensure_refiner(job.request.refiner)
                    job.cancel.raise_if_cancelled()
                    result = engine.generate(job.request, progress=on_progress, cancel=job.cancel, refiner=refiner)  # type: ignore[call-arg]
                else:
                    result = engine.generate(job.request, progress=on_progress, cancel=job.cancel)
            # As AUTOMATIC1111 (save_incomplete_images off): an interrupted job's partial images go to
            # its client only, not into the history.
            saved = sink(result, job) if sink is not None and not result.interrupted else ()
            queue.finish(job, result=result, saved=saved)
        except Cancelled:
            queue.finish(job, cancelled=True)
        except Exception as exc:
            from heyim_desktop.core.errors import UserFacingError

            if isinstance(exc, UserFacingError):
                log.warning("job %s failed: %s", job.id, exc)
            else:
                log.exception("job %s failed with an unexpected error", job.id)
            queue.finish(job, error=exc)


class WorkerThread(threading.Thread):
    """A plain thread that owns an EngineHost and drains a JobQueue (headless server, CLI)."""

    def __init__(self, queue: JobQueue, host: EngineHost, sink: ResultSink | None = None) -> None:
        super().__init__(name="heyim-engine", daemon=True)
        self.queue, self.host, self.sink = queue, host, sink

    def run(self) -> None:
        try:
            while True:
                job = self.queue.take()
                if job is None:
                    break
                self.host.run_job(self.queue, job, self.sink)
        finally:
            self.host.unload()

    def stop(self, timeout: float | None = None) -> None:
        self.queue.close()
        self.join(timeout)
