"""Opening files and folders in the desktop's own apps, and saying where they are when that fails.

A desktop without a file opener (a bare X11 session, some containers) makes
``QDesktopServices.openUrl`` return False; callers then show the path so it can be copied.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from heyim_desktop.ui.qt import QDesktopServices, QUrl

log = logging.getLogger(__name__)


def open_path(path: Path) -> bool:
    """Open a file or folder with the desktop's default app. False when nothing could open it."""
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))


def show_in_file_manager(path: Path) -> bool:
    """Reveal ``path`` (selected where the platform allows it). False when nothing could show it."""
    try:
        if sys.platform == "darwin":
            subprocess.Popen(["open", "-R", str(path)])
            return True
        if sys.platform == "win32":
            subprocess.Popen(["explorer", "/select,", str(path)])
            return True
    except OSError:
        log.info("cannot reveal %s; opening its folder", path, exc_info=True)
    return open_path(path.parent)


def move_to_trash(path: Path) -> bool:
    """Move ``path`` to the system Trash (Qt's QFile.moveToTrash). False when there is no Trash."""
    from heyim_desktop.ui.qt import QFile

    return bool(QFile.moveToTrash(str(path)))


class TrashBin:
    """Disposes of deleted images: to the Trash where there is one, else unlinked (and counted)."""

    def __init__(self) -> None:
        self.trashed = 0
        self.unlinked = 0

    def __call__(self, path: Path) -> None:
        if move_to_trash(path):
            self.trashed += 1
            return
        log.info("no Trash for %s; deleting it", path)
        path.unlink()
        self.unlinked += 1
