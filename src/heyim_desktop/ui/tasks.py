"""Small background tasks on Qt's thread pool (image decoding, thumbnails, file reads).

Results come back as a signal on the main thread; the UI never waits for a file.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from heyim_desktop.ui.qt import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)


class _Relay(QObject):
    done = Signal(object)
    error = Signal(object)


class Task(QRunnable):
    """Run ``fn()`` on the pool; ``on_done(value)`` or ``on_error(exc)`` run on the main thread."""

    def __init__(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__()
        self.fn = fn
        # The relay lives in the main thread, so its signals are delivered there.
        self.relay = _Relay()
        self.relay.done.connect(on_done)
        if on_error is not None:
            self.relay.error.connect(on_error)

    def run(self) -> None:
        try:
            value = self.fn()
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the UI
            from heyim_desktop.core.errors import UserFacingError

            if not isinstance(exc, UserFacingError):  # a bug: keep its traceback in the log
                log.error("background task failed", exc_info=True)
            self.relay.error.emit(exc)
            return
        self.relay.done.emit(value)


_pool: QThreadPool | None = None


def pool() -> QThreadPool:
    """HeyIm's own pool (2 threads), so slow disks never starve Qt's global pool."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(2)
        _pool.setObjectName("heyim-io")
    return _pool


def run_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                      on_error: Callable[[BaseException], None] | None = None) -> Task:
    task = Task(fn, on_done, on_error)
    task.setAutoDelete(False)  # we keep the relay alive until the signal is delivered
    _live.add(task)
    task.relay.done.connect(lambda _v, t=task: _live.discard(t))
    task.relay.error.connect(lambda _e, t=task: _live.discard(t))
    pool().start(task)
    return task


_live: set[Task] = set()


def pil_to_qimage(img: Any) -> Any:
    """A Pillow RGB image as a QImage that owns its pixels (callable from any thread)."""
    from heyim_desktop.ui.qt import QImage

    rgb = img if img.mode == "RGB" else img.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    w, h = rgb.size
    return QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def qimage_to_pil(image: Any) -> Any:
    """A QImage (e.g. from the clipboard) as a Pillow RGB image."""
    from PIL import Image

    from heyim_desktop.ui.qt import QImage

    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h = rgb.width(), rgb.height()
    stride = rgb.bytesPerLine()
    raw = bytes(rgb.constBits())[: stride * h]
    return Image.frombuffer("RGB", (w, h), raw, "raw", "RGB", stride, 1).copy()
