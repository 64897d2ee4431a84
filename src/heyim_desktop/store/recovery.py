"""What the history does at open: finish interrupted deletes, clean its own temp files, re-index its PNGs.

Only HeyIm's own files are ever touched: temp files in its temp folder with its names, images in
its month folders with its names that carry its marker. A folder shared with the user's own
pictures therefore keeps every one of them, and one hostile file is skipped with a log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.storage import remove_stale_temps
from heyim_desktop.store.entry_data import read_image_settings

if TYPE_CHECKING:
    from heyim_desktop.store.history import HistoryStore

log = logging.getLogger(__name__)

#: What the history names its images (image_filename) and its month folders: re-indexing looks at nothing else.
IMAGE_NAME_RE = re.compile(r"^\d{8}-\d{6}-\d+-[\w-]*\.png$")
MONTH_RE = re.compile(r"^\d{4}-\d{2}$")
#: Thumbnail temp names of earlier HeyIm versions (``<id>-<size>.<pid>.<thread>.tmp``), cleaned up too.
_OLD_THUMB_TEMP_RE = re.compile(r"^\d+-\d+\.\d+\.\d+\.tmp$")


def recover(store: "HistoryStore") -> dict[str, int]:
    deleted, failed = store._finish_deletes()
    report = {"deletes": deleted, "delete_failures": len(failed), "temp_files": 0, "reindexed": 0, "skipped": 0}
    report["temp_files"] = remove_stale_temps(store.temp_dir) + remove_stale_temps(store.thumbs_dir)
    report["temp_files"] += _remove_old_thumbnail_temps(store.thumbs_dir)
    if store.images_dir.is_dir():
        for path in _unindexed_images(store):
            if _reindex(store, path):
                report["reindexed"] += 1
            else:
                report["skipped"] += 1
    if any(report.values()):
        log.info("history recovery: %s", report)
    return report


def _unindexed_images(store: "HistoryStore") -> list[Path]:
    with store._lock:
        known = {r[0] for r in store._conn.execute("SELECT path FROM entries")}
    base = store.images_dir.resolve()
    try:
        months = [Path(d.path) for d in os.scandir(base) if MONTH_RE.match(d.name) and d.is_dir()]
    except OSError as exc:
        log.warning("cannot list the images folder %s: %s", base, exc)
        return []
    found: list[Path] = []
    for folder in months:
        try:
            names = [d.name for d in os.scandir(folder) if IMAGE_NAME_RE.match(d.name) and d.is_file()]
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            continue
        found.extend(folder / name for name in names if str(folder / name) not in known)
    return found


def _reindex(store: "HistoryStore", path: Path) -> bool:
    """Index a PNG the history wrote but has no row for; False (with a log line) for any other file."""
    try:
        params, settings, marked = read_image_settings(path)
        if not marked:  # not one of ours: never indexed, never deleted
            log.info("not re-indexed into the history: %s (no HeyIm history marker)", path)
            return False
        store._insert(path, params, settings, source="recovered", created=path.stat().st_mtime, owned=True)
        return True
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - one hostile file must not stop the history from opening
        log.warning("skipped %s while re-indexing the history: %s: %s", path, type(exc).__name__, exc)
        return False


def _remove_old_thumbnail_temps(folder: Path) -> int:
    removed = 0
    try:
        items = [d for d in os.scandir(folder) if _OLD_THUMB_TEMP_RE.match(d.name)]
    except OSError:
        return 0
    for item in items:
        with contextlib.suppress(OSError):
            os.unlink(item.path)
            removed += 1
    return removed
