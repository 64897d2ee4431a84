"""Images opened with HeyIm: "Open With" on macOS (QFileOpenEvent) or a path on the command line.

The image goes through the window's drop path, so an image that carries generation settings
asks whether to load its settings or use it as the input image, like a dropped file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from heyim_desktop.ui.qt import QEvent, QObject

log = logging.getLogger(__name__)


def open_image(window: Any, path: str | Path) -> None:
    """Bring the window forward and hand it ``path`` as a dropped image."""
    file = Path(path).expanduser()
    if not file.is_file():
        window.show_error(f"Cannot open {file}: no such file.", offer_logs=False)
        return
    window.show()
    window.raise_()
    window.activateWindow()
    window.drop_panel.load_file(file)


class FileOpenFilter(QObject):
    """Application event filter: macOS sends documents opened with the app as FileOpen events."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.FileOpen:
            path = event.file() or event.url().toLocalFile()  # type: ignore[attr-defined]
            log.info("file opened with HeyIm: %s", path)
            if path:
                open_image(self.window, path)
            return True
        return super().eventFilter(watched, event)
