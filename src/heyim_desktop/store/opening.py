"""Opening the history's database for writing, and turning SQLite's failures into clear messages."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.storage import disk_full, storage_error
from heyim_desktop.store.entry_data import load_settings_json
from heyim_desktop.store.schema import busy_error, read_only_error

log = logging.getLogger(__name__)

#: Seconds a write waits for another HeyIm process's transaction before saying the history is busy.
WRITE_TIMEOUT_S = 10.0
#: Below this much free space, a SQLite "disk I/O error" is a full disk, not damage.
LOW_SPACE_BYTES = 1024 * 1024

def connect_for_writing(root: Path, db_path: Path) -> sqlite3.Connection:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise read_only_error(root) from exc
        raise storage_error(exc, root, "the history") from exc
    if _read_only(root) or (db_path.exists() and not os.access(db_path, os.W_OK)):
        raise read_only_error(root)
    try:
        return sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=WRITE_TIMEOUT_S)
    except sqlite3.Error as exc:
        known = sqlite_storage_error(exc, root, db_path)
        raise (known or StorageError(f"Cannot open the history in {root}: {exc}")) from exc


def while_busy(conn: sqlite3.Connection, setup: Callable[[], None], db_path: Path) -> None:
    """Run ``setup`` (journal mode, schema); again while SQLite answers "locked" at once.

    Switching a new database to WAL, or a schema transaction that meets another connection's,
    can get SQLITE_BUSY without SQLite's busy handler waiting; several HeyIm processes opening a
    new history together then retry here, up to the write timeout.
    """
    deadline = time.monotonic() + WRITE_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            setup()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() + delay > deadline:
                raise
            if conn.in_transaction:
                conn.rollback()
            log.debug("history %s busy while opening; trying again", db_path)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _read_only(folder: Path) -> bool:
    if not os.access(folder, os.W_OK):
        return True
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


def _low_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def sqlite_storage_error(exc: sqlite3.Error, root: Path, db_path: Path) -> StorageError | None:
    """A clear error for SQLite failures caused by the world (full, read-only, locked), else None."""
    text = str(exc).lower()
    if "full" in text:
        return disk_full(root, "the history")
    if "locked" in text or "busy" in text:
        return busy_error(db_path)
    if "readonly" in text or "read-only" in text:
        return read_only_error(root)
    if "disk i/o" in text or "unable to open" in text:
        if _low_space(root):
            return disk_full(root, "the history")
        if _read_only(root):
            return read_only_error(root)
    return None


def absolute_paths(conn: sqlite3.Connection, bases: list[Path]) -> None:
    """Schema 1 stored paths relative to whichever images folder was current; store where each file is.

    Schema 1 also indexed any PNG it found, so rows it "recovered" from files without HeyIm's
    settings are marked as not HeyIm's: deleting those entries keeps the files.
    """
    rows = conn.execute("SELECT id, path, source, settings FROM entries").fetchall()
    for entry_id, stored, source, settings in rows:
        p = Path(stored)
        if not p.is_absolute():
            candidates = [b / p for b in bases]
            found = next((c for c in candidates if c.exists()), candidates[0])
            conn.execute("UPDATE OR IGNORE entries SET path = ? WHERE id = ?", (str(found.resolve()), entry_id))
        if source in ("recovered", "import") and "engine" not in load_settings_json(settings):
            conn.execute("UPDATE entries SET owned = 0 WHERE id = ?", (entry_id,))
