"""Starting the desktop app: window first, then the worker; torch loads only in the engine process."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from heyim_desktop.core import paths
from heyim_desktop.core.jobs import JobQueue

log = logging.getLogger(__name__)

_T0 = time.perf_counter()


@dataclass
class AppParts:
    """Everything a running app holds; the tray and the local API take ``queue`` from here."""

    app: Any
    window: Any
    queue: JobQueue
    store: Any
    worker: Any
    #: The menu-bar icon and Quick Generate box (ui.tray), set by build_app.
    tray: Any = None
    #: True when the process ends right after shutdown (run_app): the model is not unloaded first.
    exiting: bool = False

    def shutdown(self) -> None:
        """Stop the worker (the running job stops within a step), then close the store."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        services = self.window.services
        for service in (services.api, services.remote):
            if service is not None:
                service.shutdown()
        self.worker.stop(unload=not self.exiting)
        if self.tray is not None:
            self.tray.close()
        opener = getattr(self.window, "file_open_filter", None)
        if opener is not None:
            self.app.removeEventFilter(opener)
        self.window.history.close_model()
        self.store.close()


def list_models(prefs: Any) -> list[Any]:
    from heyim_desktop.models.library import ModelLibrary

    return ModelLibrary(prefs.model_folders).list()


def _import_non_qt_first() -> None:
    """Import the non-Qt modules the window needs before PySide6.

    PySide6 hooks every later import to look for ``__feature__`` use (it reads each module's
    source), which roughly doubles the cost of importing them after Qt.
    """
    import heyim_desktop.core.host  # noqa: F401
    import heyim_desktop.core.loading  # noqa: F401
    import heyim_desktop.core.process.remote  # noqa: F401
    import heyim_desktop.core.request  # noqa: F401
    import heyim_desktop.models.library  # noqa: F401
    import heyim_desktop.store  # noqa: F401
    import heyim_desktop.store.preferences  # noqa: F401


def build_app(argv: Sequence[str] | None = None, *, loader: Any = None, show: bool = True,
              in_process_engine: bool = False) -> AppParts:
    """Create the QApplication (if needed), the store, queue, worker and the window.

    ``loader`` replaces model loading altogether (benches); ``in_process_engine`` keeps the
    app's own loading, Preferences' device included, but in this process (window tests).
    """
    _import_non_qt_first()
    from heyim_desktop.store import HistoryStore
    from heyim_desktop.store.history import default_images_dir
    from heyim_desktop.store.preferences import load_preferences
    from heyim_desktop.ui.logs import log_file, setup_logging
    from heyim_desktop.ui.qt import QApplication, QSettings
    from heyim_desktop.ui.window import MainWindow
    from heyim_desktop.ui.worker import GenerationWorker, default_loader, history_sink, torch_device

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("HeyIm")
    app.setOrganizationName("HeyIm")
    app.setApplicationDisplayName("HeyIm")
    setup_logging()
    prefs = load_preferences()
    store = HistoryStore.open(images_dir=default_images_dir(prefs.output_folder))
    store.keep_limit = prefs.keep_limit or None
    queue = JobQueue()
    holder: dict[str, Any] = {}
    from heyim_desktop.core.process.remote import ProcessLoader

    # Models load in an engine process: a crash there costs one job, never the window.
    engines = None if loader or in_process_engine else ProcessLoader()

    def preferred_loader(ref: str) -> Any:
        # Read the device at load time, so a change in Preferences applies to the next model load.
        current = holder["window"].prefs if "window" in holder else prefs
        status = holder["worker"].load_status.emit if "worker" in holder else None
        from heyim_desktop.core.coreml.compute_units import compose_units

        units = compose_units(current.coreml_compute_units, current.coreml_component_units, current.coreml_memory)
        return default_loader(current.device, units, status, engines, in_process=in_process_engine,
                              precision=current.precision, text_encoders=current.text_encoders,
                              memory=current.memory)(ref)

    # The last model preloads as soon as the worker runs: its engine process starts at launch.
    def preferred_upscaler() -> Any:
        current = holder["window"].prefs if "window" in holder else prefs
        assert engines is not None
        return engines.upscaler(device=torch_device(current.device))

    worker = GenerationWorker(queue, loader or preferred_loader, history_sink(store),
                              preload=prefs.last_model or None, engines=engines,
                              upscalers=None if engines is None else preferred_upscaler)
    worker.set_idle_unload(prefs.idle_unload_minutes)
    holder["worker"] = worker
    settings = QSettings(str(paths.data_dir() / "window.ini"), QSettings.Format.IniFormat)
    from heyim_desktop.ui.services import LocalApiService, RemoteQueueService
    from heyim_desktop.ui.window import WindowServices

    def current_prefs() -> Any:
        return holder["window"].prefs if "window" in holder else prefs

    services = WindowServices(
        api=LocalApiService(queue, worker, model_folders=lambda: current_prefs().model_folders,
                            default_model=lambda: holder["window"].settings_panel.model_ref() or None
                            if "window" in holder else None,
                            engine_settings=lambda: {"device": current_prefs().device,
                                                     "precision": current_prefs().precision,
                                                     "memory": current_prefs().memory}),
        remote=RemoteQueueService(store),
    )
    window = MainWindow(queue=queue, store=store, prefs=prefs, worker=worker, settings=settings,
                        list_models=list_models, log_file=log_file(), services=services)
    holder["window"] = window
    for service in (services.api, services.remote):
        service.setParent(window)
        service.apply(prefs)

    parts = AppParts(app, window, queue, store, worker)
    app.aboutToQuit.connect(parts.shutdown)
    from heyim_desktop.ui.file_open import FileOpenFilter
    from heyim_desktop.ui.tray import install_tray

    parts.tray = install_tray(parts)
    window.file_open_filter = FileOpenFilter(window)
    app.installEventFilter(window.file_open_filter)
    if show:
        window.show()
    # The worker starts after the window is on screen; its engine process starts with the first
    # model load (at once when the last model is preloaded).
    from heyim_desktop.ui.qt import QTimer

    QTimer.singleShot(0, worker.start)
    log.info("window up in %.3f s", time.perf_counter() - _T0)
    return parts


def run_app(argv: Sequence[str] | None = None, open_files: Sequence[str] = (), fast_exit: bool = True) -> int:
    from heyim_desktop.core.errors import UserFacingError

    try:
        parts = build_app(argv)
        if open_files:
            from heyim_desktop.ui.file_open import open_image
            from heyim_desktop.ui.qt import QTimer

            def open_all() -> None:
                for f in open_files:
                    open_image(parts.window, f)

            QTimer.singleShot(0, open_all)
    except UserFacingError as exc:  # e.g. a history database from a newer HeyIm
        from heyim_desktop.ui.qt import QApplication, QMessageBox

        app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
        log.error("cannot start: %s", exc)
        QMessageBox.critical(None, "HeyIm cannot start", str(exc))
        del app
        return 3
    parts.exiting = fast_exit
    rc = int(parts.app.exec())
    parts.shutdown()  # already ran on aboutToQuit; everything is saved and closed now
    if fast_exit:
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    """End the process without Python's module teardown.

    Once torch, diffusers and transformers are imported, tearing their modules down takes 3-4 s
    after the last window closed (measured: see the README), so the app would linger. Every
    file is written and closed by now; flush the log and the standard streams, then leave.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)
