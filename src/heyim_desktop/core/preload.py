"""Loading the last-used model in the background at launch.

Core ML models can take a while to load (minutes on the Neural Engine the first time), so the
app starts loading the model the user had last while the window opens. The worker's loader is
wrapped: asking for the preloaded model waits for (or takes) that load instead of starting
another one. Any engine works; nothing here is Core ML specific. The model to preload is
``store.preferences``' ``last_model``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from heyim_desktop.core.engine import Engine

log = logging.getLogger(__name__)

EngineLoader = Callable[[str], Engine]


class Preloader:
    def __init__(self, loader: EngineLoader) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.ref: str | None = None
        self.started_at: float | None = None
        self._engine: Engine | None = None
        self._error: BaseException | None = None

    def start(self, ref: str) -> None:
        """Begin loading ``ref`` on a background thread (at most one preload at a time)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("a preload was already started")
            self.ref, self.started_at = ref, time.monotonic()
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(ref,), name="heyim-preload", daemon=True)
            self._thread.start()

    def _run(self, ref: str) -> None:
        done = self._done
        try:
            engine = self._loader(ref)
        except BaseException as exc:  # reported to whoever takes it; never lost
            log.warning("preloading %s failed: %s", ref, exc)
            self._error = exc
        else:
            self._engine = engine
        finally:
            done.set()

    @property
    def loading(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def elapsed(self) -> float:
        """Seconds since the preload started (for "Loading model... 42 s")."""
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def take(self, ref: str, timeout: float | None = None) -> Engine | None:
        """The preloaded engine for ``ref`` (waiting for it), or None if another model was preloaded.

        A preload of another model is closed when it finishes, so two models never stay in memory.
        A failed preload raises its error here, once.
        """
        with self._lock:
            if self._thread is None or self.ref is None:
                return None
            same = ref == self.ref
        if not same:
            self._discard_when_done()
            return None
        if not self._done.wait(timeout):
            raise TimeoutError(f"{ref} is still loading")
        with self._lock:
            engine, error = self._engine, self._error
            self._engine, self._error, self._thread, self.ref = None, None, None, None
        if error is not None:
            raise error
        return engine

    def _discard_when_done(self) -> None:
        def discard() -> None:
            self._done.wait()
            with self._lock:
                engine, self._engine, self._error, self._thread, self.ref = self._engine, None, None, None, None
            if engine is not None:
                engine.close()

        if self._done.is_set():
            discard()
        else:
            threading.Thread(target=discard, name="heyim-preload-discard", daemon=True).start()

    def wrap(self, loader: EngineLoader | None = None) -> EngineLoader:
        """A loader for :class:`EngineHost` that takes the preloaded engine when it matches."""
        fallback = loader or self._loader

        def load(ref: str) -> Engine:
            engine = self.take(ref)
            return engine if engine is not None else fallback(ref)

        return load
