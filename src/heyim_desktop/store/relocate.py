"""Moving the history's images to another folder: an explicit action, never a side effect.

Changing the images folder in Preferences only decides where new images go; entries keep
pointing at their files. This moves HeyIm's own images (never imported files of the user)
into the new folder, one file at a time: copy beside the target, fsync, take the name
exclusively, update the row, then delete the original. The files HeyIm kept beside an image
(an inpainting job's input and mask, ControlNet control images) move with it and keep their
names' link to it. A failure stops the move with every entry still pointing at files that exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.output import TEMP_FOLDER
from heyim_desktop.core.storage import new_temp_file, place_exclusively, writing
from heyim_desktop.store.entry_data import load_settings_json
from heyim_desktop.store.history import edit_files_by_role
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
        rows = store._conn.execute("SELECT id, path, owned, settings FROM entries WHERE deleting = 0").fetchall()
    for entry_id, stored, owned, settings_text in rows:
        src = store._abs(stored)
        if not owned or dest in src.parents:
            kept += 1
            continue
        if not src.is_file():
            missing += 1
            continue
        target_dir = dest / src.parent.name if MONTH_RE.match(src.parent.name) else dest
        settings = load_settings_json(settings_text)
        beside = {role: path for role, path in edit_files_by_role(src, settings).items() if path.is_file()}
        written: list[Path] = []
        try:
            final = _copy(src, target_dir / src.name, dest)
            written.append(final)
            recorded = settings.get("edit_files")
            names: dict[str, Any] = dict(recorded) if isinstance(recorded, dict) else {}
            for role, path in beside.items():
                copy = _copy(path, target_dir / f"{final.stem}.{role}.png", dest)
                written.append(copy)
                names[role] = copy.name
            with store._write() as conn:
                if beside:
                    settings["edit_files"] = names
                    conn.execute("UPDATE entries SET path = ?, settings = ? WHERE id = ?",
                                 (str(final), json.dumps(settings, ensure_ascii=False, default=str), entry_id))
                else:
                    conn.execute("UPDATE entries SET path = ? WHERE id = ?", (str(final), entry_id))
        except BaseException:
            for path in written:  # the row still points at the originals
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        for path in (src, *beside.values()):
            with contextlib.suppress(OSError):
                path.unlink()
        moved += 1
    with contextlib.suppress(OSError):
        (dest / TEMP_FOLDER).rmdir()
    store.images_dir = dest
    store.temp_dir = dest / TEMP_FOLDER
    return MoveReport(moved, kept, missing)


def _copy(src: Path, target: Path, dest: Path) -> Path:
    """``src`` copied to ``target`` (or ``target-N`` when taken), written whole before it gets its name."""
    with writing(target.parent, "the moved image"):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp_file(dest / TEMP_FOLDER, ".png")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out)
                out.flush()
                os.fsync(out.fileno())
            return place_exclusively(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
