"""Services the running app offers beside its window: the local HTTP API and a remote Redis queue.

Both follow Preferences (``api_enabled``/``api_port``, ``remote_queue_url``) and do their
network work off the UI thread. They know nothing of the window: they report through signals
(``status``, ``failed``, ...) that the window connects to its status bar and banners.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from heyim_desktop.core import paths
from heyim_desktop.store.preferences import Preferences
from heyim_desktop.ui.qt import QObject, QThreadPool, QTimer, Signal
from heyim_desktop.ui.tasks import run_in_background

log = logging.getLogger(__name__)

POLL_MS = 3000


def _serial_pool(name: str) -> QThreadPool:
    pool = QThreadPool()
    pool.setMaxThreadCount(1)  # one at a time: the server and RemoteQueue are not re-entrant
    pool.setObjectName(name)
    return pool


class LocalApiService(QObject):
    """Starts and stops :class:`heyim_desktop.api.ApiServer` on the app's own queue."""

    status = Signal(str)
    failed = Signal(str)
    #: The address it serves on, or None once stopped.
    url_changed = Signal(object)

    def __init__(self, queue: Any, worker: Any, model_folders: Callable[[], Sequence[str]],
                 default_model: Callable[[], str | None], parent: QObject | None = None,
                 engine_settings: Callable[[], dict[str, str]] = dict) -> None:
        super().__init__(parent)
        self.queue, self.worker = queue, worker
        #: The device, precision and memory Preferences now (the API's cmd-flags report them).
        self.engine_settings = engine_settings
        self.model_folders, self.default_model = model_folders, default_model
        self.server: Any = None
        self.url: str | None = None
        self._pool = _serial_pool("heyim-api")

    def apply(self, prefs: Preferences) -> None:
        running_port = self.server.port if self.server is not None else None
        if prefs.api_enabled and running_port == prefs.api_port:
            return
        if self.server is not None:
            self._run(self._stop, self._stopped)
        if prefs.api_enabled:
            self._run(lambda: self._start(prefs.api_port), self._started)

    def _run(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        run_in_background(fn, done, self._failed, on_pool=self._pool)

    def _start(self, port: int) -> str:
        from heyim_desktop.api import ApiServer, library_catalog, resolve_token
        from heyim_desktop.models.library import ModelLibrary
        from heyim_desktop.models.networks import NetworkLibrary

        token, where = resolve_token(None, paths.data_dir())
        server = ApiServer(
            self.queue, token=token, port=port,
            models=library_catalog(ModelLibrary(tuple(self.model_folders()))),
            default_model=self.default_model,
            engine_host=getattr(self.worker, "host", None),
            networks=NetworkLibrary(ModelLibrary(tuple(self.model_folders()))).finder(),
        )
        server.context.engine_settings = self.engine_settings
        server.start()
        self.server = server
        return f"Local API on {server.url} (token in {where})"

    def _stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def _started(self, message: str) -> None:
        self.url = self.server.url if self.server is not None else None
        log.info("%s", message)
        self.status.emit(message)
        self.url_changed.emit(self.url)

    def _stopped(self, _value: object = None) -> None:
        if self.server is None:
            self.url = None
            self.url_changed.emit(None)

    def _failed(self, exc: BaseException) -> None:
        self.failed.emit(f"The local API could not start: {exc}")

    def shutdown(self) -> None:
        self._pool.waitForDone(10_000)
        self._stop()


class RemoteQueueService(QObject):
    """Sends the window's jobs to a Redis queue and brings finished images into history."""

    status = Signal(str)
    failed = Signal(str)
    #: History entries of images that machines finished (already in the store).
    arrived = Signal(list)

    def __init__(self, store: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.remote: Any = None
        self._pool = _serial_pool("heyim-remote-queue")
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        self._polling = False

    @property
    def active(self) -> bool:
        return self.remote is not None

    def apply(self, prefs: Preferences) -> None:
        url = prefs.remote_queue_url.strip()
        if self.remote is not None and self.remote.url == url:
            return
        self._timer.stop()
        self.remote = None
        if not url:
            return
        from heyim_desktop.core.errors import UserFacingError
        from heyim_desktop.scale.client import RemoteQueue

        try:
            self.remote = RemoteQueue(url, self.store)
        except UserFacingError as exc:
            self.failed.emit(str(exc))
            return
        self._timer.start()

    def submit(self, request: Any) -> None:
        remote = self.remote
        requests = [request.with_seed()]

        def done(submitted: Any) -> None:
            self.status.emit(f"Sent to the render queue (batch {submitted.batch_id}); "
                               "images arrive in history as machines finish them.")

        run_in_background(lambda: remote.submit(requests, name=request.prompt[:40]), done, self._failed,
                          on_pool=self._pool)

    def poll(self) -> None:
        if self.remote is None or self._polling or not self.remote.open_batches:
            return
        self._polling = True
        remote = self.remote
        run_in_background(remote.poll, self._polled, self._failed, on_pool=self._pool)

    def _polled(self, collected: Any) -> None:
        self._polling = False
        if collected.saved:
            self.arrived.emit(list(collected.saved))
        for job_id, reason in collected.failed:
            self.failed.emit(f"A queued job failed ({job_id}): {reason}")

    def _failed(self, exc: BaseException) -> None:
        self._polling = False
        self.failed.emit(f"Render queue: {exc}")

    def shutdown(self) -> None:
        self._timer.stop()
        self._pool.waitForDone(10_000)
