"""The generation worker: one QThread owns the EngineHost and drains the app's JobQueue.

Widgets never touch the engine. They submit requests to the queue (so can the tray and the
local API) and hear about jobs through the typed signals below, delivered on the main
thread by Qt's queued connections. In the app the engine itself runs in a child process
(:mod:`heyim_desktop.core.process`): this thread only waits on it, and this process never
imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.core.host import EngineHost, EngineLoader, ResultSink, UpscalerStarter, engine_stopped
from heyim_desktop.core.jobs import Job, JobQueue, JobState
from heyim_desktop.ui.qt import QImage, QThread, Signal

if TYPE_CHECKING:
    import numpy as np

    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.core.conditioning import TokenCount
    from heyim_desktop.core.engine import Engine, EngineInfo
    from heyim_desktop.core.process.remote import ProcessLoader

log = logging.getLogger(__name__)

#: How often an idle worker looks for a model to preload (the queue wakes it for jobs).
IDLE_POLL_S = 0.2


@dataclass(frozen=True)
class ModelReady:
    """What the window learns when a model has loaded."""

    ref: str
    model_name: str
    engine_name: str
    seconds: float
    default_size: tuple[int, int]
    fixed_size: tuple[int, int] | None
    supports_img2img: bool
    #: Clip skip works with this model (PyTorch engine; not Core ML).
    supports_clip_skip: bool = True
    #: The engine's ``count_tokens`` for the token counter (safe to call from the GUI thread;
    #: the engine process answers it, or None when busy: the counter then estimates), or None.
    count_tokens: "Callable[[str], TokenCount | None] | None" = None
    #: What the model can do (prompt chunks, recommended settings), from the engine's info.
    capabilities: "Capabilities | None" = None
    #: Everything the engine says about the model (from the engine process: plain data).
    info: "EngineInfo | None" = field(default=None, compare=False)


def rgb_array_to_qimage(arr: "np.ndarray[Any, Any]") -> QImage:
    """(h, w, 3) uint8 -> QImage that owns its pixels (safe to send across threads)."""
    import numpy as np

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape[:2]
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def default_loader(device: str = "auto", compute_units: str | None = None,
                   on_status: Callable[[str], None] | None = None,
                   engines: ProcessLoader | None = None, *, in_process: bool = False,
                   precision: str = "auto", text_encoders: dict[str, str] | None = None,
                   memory: str = "auto") -> EngineLoader:
    """Load models in an engine process (``engines`` keeps the crash counts between loads);
    ``in_process``: in this process instead (window tests, which must not start a child per test);
    ``text_encoders``: model ref -> the GGUF text encoder file chosen for it (Preferences.text_encoders);
    ``memory``: how Z-Image / FLUX.2 [klein] / SD 3.5 models use memory (Preferences.memory)."""
    from heyim_desktop.store.preferences import Preferences, text_encoder_for

    prefs = Preferences(text_encoders=dict(text_encoders or {}))
    if in_process:
        from heyim_desktop.core.loading import load_engine

        return lambda ref: load_engine(ref, device=torch_device(device), compute_units=compute_units,
                                       on_status=on_status, precision=precision,
                                       text_encoder=text_encoder_for(prefs, ref), memory=memory)
    from heyim_desktop.core.process.remote import ProcessLoader

    loader = engines or ProcessLoader()
    return lambda ref: loader.load(ref, device=torch_device(device), compute_units=compute_units, on_status=on_status,
                                   precision=precision, text_encoder=text_encoder_for(prefs, ref), memory=memory)


def torch_device(device: str) -> str:
    """The torch device for the device preference: "coreml" is not one (Core ML folders are
    routed by their contents, and the preference's compute units apply to them)."""
    return device if device in ("auto", "cpu", "cuda", "mps") else "auto"


class GenerationWorker(QThread):
    """The one thread that loads models and runs jobs. Start it after the window shows."""

    job_queued = Signal(object)  # Job
    job_started = Signal(object)  # Job
    #: job id, steps done, steps in all (over every image of the job), seconds elapsed
    progress = Signal(int, int, int, float)
    preview = Signal(int, QImage)  # job id, preview at latent resolution
    job_finished = Signal(object)  # Job; job.saved holds the history entries
    job_failed = Signal(object, str)  # Job, a message for the user
    job_cancelled = Signal(object)  # Job (removed while waiting, or stopped while running)
    queue_changed = Signal()
    model_loading = Signal(str)  # model reference
    model_ready = Signal(object)  # ModelReady
    model_failed = Signal(str, str)  # model reference, message
    load_status = Signal(str)  # a step of a long model load (Core ML compiling, measuring), for the status bar
    #: model reference, why ("asked" by Unload Model, "idle" after the preference's time);
    #: the engine process has ended and its memory is back with the system.
    model_unloaded = Signal(str, str)

    def __init__(self, queue: JobQueue, loader: EngineLoader, sink: ResultSink | None = None,
                 preload: str | None = None, parent: Any = None, *, engines: ProcessLoader | None = None,
                 upscalers: UpscalerStarter | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("heyim-engine")
        self.queue = queue
        # With engine processes, upscale jobs run in one too (never torch in the window's process).
        self.host = EngineHost(loader, upscalers=upscalers or (engines.upscaler if engines is not None else None))
        self.host.listener = _HostEvents(self)
        self.sink = sink
        #: The engine processes' loader, when ``loader`` uses one (crash counts live there).
        self.engines = engines
        #: Seconds without a job after which the model is unloaded; 0 = never (the default).
        self.idle_unload_s = 0.0
        self._wanted_lock = threading.Lock()
        self._wanted: str | None = preload
        self._unload_wanted = False
        self._last_busy = time.monotonic()
        self._stopping = False
        queue.add_listener(self._on_job)

    # -- called from the main thread ---------------------------------------------------------
    def request_model(self, ref: str | None) -> None:
        """Load ``ref`` as soon as the worker is idle (model switch without restart)."""
        if ref and self.engines is not None:
            self.engines.forgive(ref)  # the user chose it again: crashes no longer block restarts
        with self._wanted_lock:
            self._wanted = ref or None
            self._unload_wanted = False

    def unload_model(self) -> None:
        """End the engine process (all its memory goes back) once the running job, if any, is done."""
        with self._wanted_lock:
            self._wanted, self._unload_wanted = None, True

    def set_idle_unload(self, minutes: float) -> None:
        """Unload the model after ``minutes`` without a job; 0 turns it off."""
        self.idle_unload_s = max(0.0, float(minutes)) * 60.0

    def stop(self, timeout_ms: int | None = None, unload: bool = True) -> bool:
        """Cancel everything, let the running job stop within a step, free the engine.

        ``unload=False`` when the process is about to end: freeing a model's memory (about a
        second of garbage collection) buys nothing then, the OS takes it back at exit.
        """
        self._unload_on_stop = unload
        self._stopping = True
        self.queue.remove_listener(self._on_job)
        self.queue.close()
        if self.engines is not None:
            self.engines.abort_loading()  # a model load in the engine process cannot be cancelled
        if not self.isRunning():
            return True
        return self.wait() if timeout_ms is None else self.wait(timeout_ms)

    @property
    def current_model(self) -> str | None:
        return self.host.loaded_ref

    # -- the worker thread -------------------------------------------------------------------
    def run(self) -> None:
        threading.current_thread().name = "heyim-engine"
        try:
            while not self._stopping:
                self._unload_if_wanted()
                self._preload_if_wanted()
                job = self.queue.take(timeout=IDLE_POLL_S)
                if job is None:
                    if self.queue.closed:
                        break
                    continue
                with self._wanted_lock:
                    self._wanted = None  # the job names its own model
                self.host.run_job(self.queue, job, self.sink)
                self._last_busy = time.monotonic()
                engine = self.host.engine
                if job.state is JobState.CANCELLED and engine is not None and engine_stopped(engine):
                    # The engine ignored the cancel and was killed: start a fresh one at once.
                    self.request_model(self.host.model_ref)
        finally:
            try:
                if getattr(self, "_unload_on_stop", True):
                    self.host.unload()
            except Exception:  # noqa: BLE001 - quitting must not crash
                log.exception("unloading the model failed")

    def _unload_if_wanted(self) -> None:
        with self._wanted_lock:
            asked, self._unload_wanted = self._unload_wanted, False
        idle = (self.idle_unload_s > 0 and time.monotonic() - self._last_busy >= self.idle_unload_s)
        ref = self.host.model_ref
        if ref is None and (asked or idle) and self.host.upscaler is not None:
            self.host.unload_upscaler()  # the model-less upscale process: no model to report
        if ref is None or not (asked or idle):
            return
        try:
            self.host.unload()
        except Exception:  # noqa: BLE001 - the engine process is gone either way
            log.exception("unloading the model failed")
        log.info("model %s unloaded (%s)", ref, "asked" if asked else "idle")
        self.model_unloaded.emit(ref, "asked" if asked else "idle")

    def _preload_if_wanted(self) -> None:
        with self._wanted_lock:
            ref, self._wanted = self._wanted, None
        if ref is None or ref == self.host.loaded_ref:
            return
        try:
            self.host.ensure_model(ref)
            self._last_busy = time.monotonic()
        except UserFacingError as exc:  # reported through model_failed already; not a bug
            log.info("preloading %s failed: %s", ref, exc)
        except Exception:  # reported through model_failed already
            log.info("preloading %s failed", ref, exc_info=True)

    # -- queue listener (whichever thread changed the job) -----------------------------------
    def _on_job(self, job: Job) -> None:
        state = job.state
        if state is JobState.QUEUED:
            self.job_queued.emit(job)
            self.queue_changed.emit()
        elif state is JobState.RUNNING:
            p = job.progress
            if p is None:
                self.job_started.emit(job)
                self.queue_changed.emit()
                return
            # Progress counts the steps of every image already (core.loop): no multiplying by images.
            self.progress.emit(int(job.id), p.step, p.total, float(p.elapsed))
            if p.preview is not None:
                self.preview.emit(int(job.id), rgb_array_to_qimage(p.preview))
        elif state is JobState.DONE:
            self.job_finished.emit(job)
            self.queue_changed.emit()
        elif state is JobState.FAILED:
            self.job_failed.emit(job, job.error_message or "The job failed.")
            self.queue_changed.emit()
        elif state is JobState.CANCELLED:
            self.job_cancelled.emit(job)
            self.queue_changed.emit()


class _HostEvents:
    """EngineHost's listener: turns its calls (on the worker thread) into the worker's signals."""

    def __init__(self, worker: GenerationWorker) -> None:
        self.worker = worker

    def model_loading(self, ref: str) -> None:
        self.worker.model_loading.emit(ref)

    def model_ready(self, ref: str, engine: "Engine", seconds: float) -> None:
        # What the engine offers through its interface (the engine process answers these).
        from heyim_desktop.core.engine import EngineInfo

        engine_info = getattr(engine, "info", None)
        info = ModelReady(
            ref=ref,
            model_name=engine.model_name,
            engine_name=engine.name,
            seconds=seconds,
            default_size=tuple(engine.default_size),  # type: ignore[arg-type]
            fixed_size=engine.fixed_size,
            supports_img2img=bool(getattr(engine, "supports_img2img", True)),
            info=engine_info if isinstance(engine_info, EngineInfo) else None,
            supports_clip_skip=_clip_skip_ok(engine),
            count_tokens=getattr(engine, "count_tokens", None),
            capabilities=getattr(engine_info, "capabilities", None),
        )
        self.worker.model_ready.emit(info)

    def model_failed(self, ref: str, error: BaseException) -> None:
        from heyim_desktop.core.errors import UserFacingError

        message = str(error) if isinstance(error, UserFacingError) else f"{type(error).__name__}: {error}"
        self.worker.model_failed.emit(ref, message)


def _clip_skip_ok(engine: "Engine") -> bool:
    try:
        return bool(engine.info.capabilities.clip_skip)
    except AttributeError:  # an engine without EngineInfo (test doubles)
        return True


@dataclass(frozen=True)
class ModelCapabilities:
    """What the window adapts to once a model is loaded."""

    native_size: tuple[int, int]
    fixed_size: tuple[int, int] | None
    supports_img2img: bool
    #: Images denoised together; 1 means the images of a job run one after another.
    max_batch: int = 1


def model_capabilities(info: ModelReady) -> ModelCapabilities:
    """The one place the window learns what a model can do: EngineInfo.capabilities where the
    engine offers it, else what the worker read off the engine."""
    caps = info.capabilities
    if caps is not None:
        return ModelCapabilities(native_size=(int(info.default_size[0]), int(info.default_size[1])),
                                 fixed_size=caps.fixed_size, supports_img2img=bool(caps.img2img),
                                 max_batch=max(1, int(caps.max_batch)))
    return ModelCapabilities(native_size=(int(info.default_size[0]), int(info.default_size[1])),
                             fixed_size=info.fixed_size, supports_img2img=info.supports_img2img)


def history_sink(store: Any) -> ResultSink:
    """Every finished job lands in history: files first, then rows (the store's guarantee)."""

    def sink(result: Any, job: Job) -> tuple[object, ...]:
        return tuple(store.save_result(result, job))

    return sink


SubmitFn = Callable[..., Job]
