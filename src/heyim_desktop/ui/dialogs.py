"""Where file dialogs open: the last folder used for that kind of file, else Pictures or Downloads.

Never the process's working directory (from a terminal that is wherever HeyIm was started,
from a checkout the source tree).
"""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.ui.qt import QSettings, QStandardPaths

#: kind -> the standard location used before anything was chosen.
_DEFAULTS = {
    "image": QStandardPaths.StandardLocation.PicturesLocation,
    "save": QStandardPaths.StandardLocation.PicturesLocation,
    "model": QStandardPaths.StandardLocation.DownloadLocation,
    "folder": QStandardPaths.StandardLocation.HomeLocation,
}
_settings: QSettings | None = None
_memory: dict[str, str] = {}


def use_settings(settings: QSettings | None) -> None:
    """Remember last folders in ``settings`` (the window's QSettings); None keeps them in memory."""
    global _settings
    _settings = settings


def _standard(kind: str) -> Path:
    location = _DEFAULTS.get(kind, QStandardPaths.StandardLocation.HomeLocation)
    for candidate in (QStandardPaths.writableLocation(location),
                      QStandardPaths.writableLocation(QStandardPaths.StandardLocation.HomeLocation)):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return Path.home()


def start_folder(kind: str) -> Path:
    """The folder a dialog for ``kind`` ("image", "save", "model", "folder") should open in."""
    stored = _settings.value(f"dialogs/{kind}") if _settings is not None else _memory.get(kind)
    if isinstance(stored, str) and stored and Path(stored).is_dir():
        return Path(stored)
    return _standard(kind)


def remember_folder(kind: str, folder: Path) -> None:
    if _settings is not None:
        _settings.setValue(f"dialogs/{kind}", str(folder))
    else:
        _memory[kind] = str(folder)
