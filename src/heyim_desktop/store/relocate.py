"""Moving the history's images to another folder: an explicit action, never a side effect.

Changing the images folder in Preferences only decides where new images go; entries keep
pointing at their files. This moves HeyIm's own images (never imported files of the user)
into the new folder, one file at a time: copy beside the target, fsync, take the name
exclusively, update the row, then delete the original. A failure stops the move with every
entry still pointing at a file that exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heyim_desktop.core.output import TEMP_FOLDER
from heyim_desktop.core.storage import new_temp_file, place_exclusively, writing
from heyim_desktop.store.recovery import MONTH_RE

if TYPE_CHECKING:
    from heyim_desktop.store.history import HistoryStore


@dataclass(frozen=True)
class MoveReport:
    moved: int
    #: Entries left where they were: imported (not HeyIm's) or already in the folder.
    kept: int
    missing: int


def move_images(store: "HistoryStore", dest: Path) -> MoveReport:
    dest = Path(dest).expanduser().resolve()
    moved = kept = missing = 0
    with store._lock:
        rows = store._conn.execute("SELECT id, path, owned FROM entries WHERE deleting = 0").fetchall()
    for entry_id, stored, owned in rows:
        src = store._abs(stored)
        if not owned or dest in src.parents:
            kept += 1
            continue
        if not src.is_file():
            missing += 1
            continue
        target_dir = dest / src.parent.name if MONTH_RE.match(src.parent.name) else dest
        with writing(target_dir, "the moved image"):
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = new_temp_file(dest / TEMP_FOLDER, ".png")
            try:
                with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out)
                    out.flush()
                    os.fsync(out.fileno())
                final = place_exclusively(tmp, target_dir / src.name)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        try:
            with store._write() as conn:
                conn.execute("UPDATE entries SET path = ? WHERE id = ?", (str(final), entry_id))
        except BaseException:
            with contextlib.suppress(OSError):
                final.unlink()  # the row still points at the original
            raise
        with contextlib.suppress(OSError):
            src.unlink()
        moved += 1
    with contextlib.suppress(OSError):
        (dest / TEMP_FOLDER).rmdir()
    store.images_dir = dest
    store.temp_dir = dest / TEMP_FOLDER
    return MoveReport(moved, kept, missing)
