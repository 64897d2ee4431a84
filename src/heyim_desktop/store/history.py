"""The history: every generated image as a PNG file plus a row in SQLite.

Files first, then rows: an image file is complete on disk (atomic write) before its row is
committed, so every row has its file. A crash between the two leaves a PNG without a row;
it carries its own metadata and HeyIm's marker, and is re-indexed at the next open, so
nothing is lost. Deleting marks rows first, removes files, then removes rows; an interrupted
delete is finished at the next open.

The images folder may be a folder the user also uses (Pictures): HeyIm deletes only files
it wrote and recorded, keeps its temp files in its own subfolder, re-indexes only files that
carry its marker, and stores each entry's absolute path, so changing the images folder
orphans nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NewType

from heyim_desktop.core import paths
from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.metadata import format_parameters, parse_parameters
from heyim_desktop.core.output import TEMP_FOLDER, image_filename, write_png_atomic
from heyim_desktop.core.storage import new_temp_file, writing
from heyim_desktop.store import opening
from heyim_desktop.store.entry_data import (
    HISTORY_MARKER,
    clean_settings,
    load_settings_json,
    read_image_settings,
    request_settings,
)
from heyim_desktop.store.schema import NewerSchemaError, NotAHistoryError, inspect_database, migrate

if TYPE_CHECKING:
    from heyim_desktop.core.jobs import Job
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GenerationResult
    from heyim_desktop.core.upscale_job import UpscaleResult
    from heyim_desktop.store.relocate import MoveReport

log = logging.getLogger(__name__)

EntryId = NewType("EntryId", int)
DB_NAME = "history.sqlite3"

__all__ = ["EntryId", "HistoryEntry", "HistoryStore", "NewerSchemaError", "NotAHistoryError", "default_images_dir"]

_COLUMNS = (
    "id, created, path, prompt, negative_prompt, seed, width, height, steps, guidance, scheduler, "
    "model_name, strength, favourite, parameters, settings, source, owned, delete_error"
)


def default_images_dir(output_folder: str = "") -> Path:
    """Where new images go: Preferences' output folder, or the data folder's own."""
    if output_folder.strip():
        return Path(output_folder.strip()).expanduser()
    return paths.data_dir() / "history" / "images"


@dataclass(frozen=True)
class HistoryEntry:
    id: EntryId
    created: float
    path: Path
    prompt: str
    negative_prompt: str
    seed: int | None
    width: int | None
    height: int | None
    steps: int | None
    guidance: float | None
    scheduler: str | None
    model_name: str
    strength: float | None
    favourite: bool
    tags: tuple[str, ...]
    parameters: str
    settings: dict[str, Any]
    source: str = ""
    #: HeyIm wrote the file (only then does deleting the entry delete the file).
    owned: bool = True
    #: Why deleting this entry's file failed; the entry stays, shown as "could not delete".
    delete_error: str = ""

    def edit_files(self) -> tuple[Path | None, Path | None]:
        """(input picture, mask) of an inpainted image, where HeyIm kept them and they still exist."""
        found = {r: p for r, p in edit_files_by_role(self.path, self.settings).items() if p.is_file()}
        return found.get("source"), found.get("mask")

    def control_files(self) -> list[Path | None]:
        """Per ControlNet unit of this image (in order): the control image HeyIm kept, else None.

        None also for a unit that used the input image, and for a kept file that is gone
        (:meth:`missing_control_files` tells those apart)."""
        found = {r: p for r, p in edit_files_by_role(self.path, self.settings).items() if p.is_file()}
        units = self.settings.get("controlnet")
        count = min(len(units), MAX_CONTROL_FILES) if isinstance(units, list) else 0
        return [found.get(f"control{i}") for i in range(count)]

    def missing_control_files(self) -> list[int]:
        """The units whose control image HeyIm kept but whose file is no longer there."""
        recorded = self.settings.get("edit_files")
        if not isinstance(recorded, dict):
            return []
        files = self.control_files()
        return [i for i in range(len(files)) if files[i] is None and isinstance(recorded.get(f"control{i}"), str)]

    def inpaint_settings(self) -> dict[str, Any]:
        """The inpainting options this image was made with ({} when it was not inpainted)."""
        value = self.settings.get("inpaint")
        if isinstance(value, dict):
            out = {("blur" if k == "mask_blur" else k): v for k, v in value.items()}
            return {k: v for k, v in out.items() if k in ("blur", "invert", "fill", "only_masked", "padding", "keep_unmasked")}
        from heyim_desktop.core.metadata import parse_parameters as parse

        return (parse(self.parameters).inpaint_settings() or {}) if self.parameters.strip() else {}

    def request_settings(self) -> dict[str, Any]:
        """Keyword arguments for GenerationRequest that reproduce this image (never raises)."""
        if self.settings:
            return request_settings(self.settings)
        if self.parameters.strip():
            return request_settings(parse_parameters(self.parameters).request_settings())
        return {"prompt": self.prompt}


#: ControlNet units whose control image is kept beside the image (core.controlnet.MAX_UNITS).
MAX_CONTROL_FILES = 4
_EDIT_ROLES = ("source", "mask", *(f"control{i}" for i in range(MAX_CONTROL_FILES)))


def edit_files_by_role(image: Path, settings: dict[str, Any]) -> dict[str, Path]:
    """The inpainting input and mask and the ControlNet control images HeyIm kept beside ``image``,
    by role (names it recorded, beside it only, ``<stem>.<role>.png`` or ``-N`` when that was taken)."""
    edit = settings.get("edit_files")
    if not isinstance(edit, dict):
        return {}
    out = {}
    for role in _EDIT_ROLES:
        name = edit.get(role)
        if (isinstance(name, str) and name == Path(name).name and name.startswith(f"{image.stem}.")
                and re.search(rf"\.{role}(-\d+)?\.png$", name)):
            out[role] = image.with_name(name)
    return out


def edit_file_paths(image: Path, settings: dict[str, Any]) -> list[Path]:
    """Every file :func:`edit_files_by_role` names (deleted with the entry)."""
    return list(edit_files_by_role(image, settings).values())


def _fts_query(text: str) -> str:
    """User text -> an FTS5 query: every word must match, as a prefix (search as you type)."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " ".join(f'"{w}"*' for w in words)


def _normalise_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        t = " ".join(str(tag).split()).strip().lower()[:64]
        if t and t not in out:
            out.append(t)
    return out


def _set_up(conn: sqlite3.Connection, images: Path, root: Path) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn, fix_paths=lambda c: opening.absolute_paths(c, [images, root / "images"]))


class HistoryStore:
    """Thread-safe: one connection behind a lock (writes are small; readers page)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, images_dir: Path) -> None:
        self.root = root
        self.images_dir = images_dir
        self.thumbs_dir = root / "thumbnails"
        #: Unfinished PNGs: a subfolder only HeyIm uses, so cleaning it never touches a user's file.
        self.temp_dir = images_dir / TEMP_FOLDER
        self._conn = conn
        self._lock = threading.RLock()
        self.keep_limit: int | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | None = None, *, images_dir: Path | None = None, recover: bool = True) -> HistoryStore:
        """Open (or create) the history in ``root``; new images go to ``images_dir``.

        The database is looked at read-only first; one that is not a HeyIm history, or is from
        a newer HeyIm, is left byte-identical. Only then is it opened for writing.
        """
        root = Path(root) if root is not None else paths.data_dir() / "history"
        db_path = root / DB_NAME
        images = Path(images_dir) if images_dir else root / "images"
        inspect_database(db_path)
        conn = opening.connect_for_writing(root, db_path)
        try:
            opening.while_busy(conn, lambda: _set_up(conn, images, root), db_path)
        except (NewerSchemaError, NotAHistoryError):
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            known = opening.sqlite_storage_error(exc, root, db_path)
            if known is not None:
                raise known from exc
            raise StorageError(f"The history database {db_path} is damaged ({exc}).") from exc
        store = cls(root, conn, images)
        if recover:
            store.recover()
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                known = opening.sqlite_storage_error(exc, self.root, self.root / DB_NAME)
                if known is not None:
                    raise known from exc
                raise StorageError(f"The history could not be updated: {exc}") from exc

    # -- paths -----------------------------------------------------------------------------
    @staticmethod
    def _stored(path: Path) -> str:
        return str(Path(path).resolve())

    def _abs(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.images_dir / p

    def set_images_dir(self, images_dir: Path) -> None:
        """New images go to ``images_dir`` from now on; images saved so far stay where they are."""
        new = Path(images_dir)
        if new.resolve() == self.images_dir.resolve():
            return
        with self._write() as conn:
            rows = conn.execute("SELECT id, path FROM entries").fetchall()
            moved = [(str(self._abs(stored).resolve()), entry_id) for entry_id, stored in rows
                     if not Path(stored).is_absolute()]
            conn.executemany("UPDATE entries SET path = ? WHERE id = ?", moved)
        self.images_dir = new
        self.temp_dir = new / TEMP_FOLDER

    # -- saving ----------------------------------------------------------------------------
    def save_result(self, result: "GenerationResult | UpscaleResult", job: "Job | None" = None) -> list[HistoryEntry]:
        """Write every image of ``result`` (file first), then its row. Returns the new entries."""
        from heyim_desktop.core.upscale_job import UpscaleResult

        if isinstance(result, UpscaleResult):
            return [self.save_upscaled(result, job)]
        request = result.request
        folder = self.images_dir / time.strftime("%Y-%m")
        entries = []
        if result.first_pass:  # hires fix, asked to keep the first pass: saved as the plain txt2img it was
            plain = request.replace(hires=None)
            for item in result.first_pass:
                params = format_parameters(plain, item.seed, result.model_name)
                settings = dict(plain.settings(), seed=item.seed, count=1, model_name=result.model_name,
                                engine=result.engine, hires_first_pass=True)
                path = write_png_atomic(item.image, folder / image_filename(request.prompt, item.seed), params,
                                        dict(settings, **{HISTORY_MARKER: 1}), temp_dir=self.temp_dir)
                entries.append(self._insert(path, params, settings, source=job.source if job else "", owned=True))
        for item in result.images:
            params = format_parameters(request, item.seed, result.model_name, model_hash=result.model_hash,
                                   extra=dict(result.parameters_extra))
            settings = dict(request.settings(), seed=item.seed, count=1, model_name=result.model_name,
                            engine=result.engine)
            marked = dict(settings, **{HISTORY_MARKER: 1})
            path = write_png_atomic(item.image, folder / image_filename(request.prompt, item.seed), params, marked,
                                    temp_dir=self.temp_dir)
            edit = self._write_edit_files(request, path)
            edit.update(self._write_control_files(request, path))
            if edit:
                settings["edit_files"] = edit
            entries.append(self._insert(path, params, settings, source=job.source if job else "", owned=True))
        self.enforce_keep_limit()
        return entries

    def save_upscaled(self, result: "UpscaleResult", job: "Job | None" = None) -> HistoryEntry:
        """An upscaled image as a new entry that records its source entry and the upscale."""
        from heyim_desktop.core.metadata import postprocess_parameters

        req = result.request
        image = result.images[0].image
        params = postprocess_parameters(req.source_parameters, req.effective_scale, req.upscaler)
        settings = dict(req.source_settings)
        settings.update(width=image.width, height=image.height, upscaled_from=req.source_entry,
                        postprocess_upscale_by=req.effective_scale, postprocess_upscaler=req.upscaler,
                        engine="upscale")
        settings.setdefault("prompt", "")
        stem = settings.get("prompt") or "upscale"
        folder = self.images_dir / time.strftime("%Y-%m")
        name = image_filename(f"{stem} x{req.effective_scale:g}", int(settings.get("seed") or 0))
        path = write_png_atomic(image, folder / name, params, dict(settings, **{HISTORY_MARKER: 1}),
                                temp_dir=self.temp_dir)
        entry = self._insert(path, params, settings, source="upscale", owned=True)
        self.enforce_keep_limit()
        return entry

    def _write_edit_files(self, request: "GenerationRequest", image_path: Path) -> dict[str, str]:
        """An inpainting job's input picture and mask, kept beside its image (so it can be redone)."""
        spec = request.inpaint
        if spec is None or request.init_image is None:
            return {}
        written: dict[str, str] = {}
        for role, picture in (("source", request.init_image), ("mask", spec.mask)):
            target = image_path.with_name(f"{image_path.stem}.{role}.png")
            final = write_png_atomic(picture, target, "", None, temp_dir=self.temp_dir)
            written[role] = final.name
        return written

    def _write_control_files(self, request: "GenerationRequest", image_path: Path) -> dict[str, str]:
        """Each ControlNet unit's own control image, kept beside the image (Reuse Settings restores it).

        A unit without one used the request's input image: nothing is kept for it."""
        written: dict[str, str] = {}
        try:
            for i, unit in enumerate(request.controlnets[:MAX_CONTROL_FILES]):
                if unit.image is None:
                    continue
                target = image_path.with_name(f"{image_path.stem}.control{i}.png")
                written[f"control{i}"] = write_png_atomic(unit.image, target, "", None, temp_dir=self.temp_dir).name
        except BaseException:  # disk full: no control image is left behind without its entry
            for name in written.values():
                with contextlib.suppress(OSError):
                    image_path.with_name(name).unlink()
            raise
        return written

    def import_image(self, path: Path, *, source: str = "import", owned: bool = False) -> HistoryEntry:
        """Index an existing PNG (with HeyIm or AUTOMATIC1111 metadata).

        Only its two text chunks are read, within limits, and their values are type-checked.
        Unless ``owned``, deleting the entry later leaves the file alone.
        """
        params, settings, _marked = read_image_settings(Path(path))
        return self._insert(Path(path), params, settings, source=source, created=Path(path).stat().st_mtime,
                            owned=owned)

    def _insert(self, path: Path, params: str, settings: dict[str, Any], *, source: str,
                created: float | None = None, owned: bool = True) -> HistoryEntry:
        clean = clean_settings(settings)
        stored = self._stored(path)
        row = (
            created if created is not None else time.time(), stored, clean.get("prompt") or "",
            clean.get("negative_prompt") or "", clean.get("seed"), clean.get("width"),
            clean.get("height"), clean.get("steps"), clean.get("guidance"), clean.get("scheduler"),
            clean.get("model_name") or clean.get("model") or "", clean.get("strength"),
            clean.get("engine") or "", source, params, json.dumps(settings, ensure_ascii=False, default=str),
            1 if owned else 0,
        )
        with self._write() as conn:
            # Another HeyIm on the same folder may have indexed this very file a moment ago: keep its row.
            conn.execute(
                "INSERT INTO entries (created, path, prompt, negative_prompt, seed, width, height, steps, guidance, "
                "scheduler, model_name, strength, engine, source, parameters, settings, owned) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO NOTHING",
                row,
            )
            entry_id = EntryId(int(conn.execute("SELECT id FROM entries WHERE path = ?", (stored,)).fetchone()[0]))
        entry = self.get(entry_id)
        assert entry is not None
        return entry

    # -- reading ---------------------------------------------------------------------------
    def _where(self, query: str, favourites_only: bool, tag: str | None) -> tuple[str, list[Any]]:
        clauses, args = ["e.deleting = 0"], []  # type: tuple[list[str], list[Any]]
        fts = _fts_query(query)
        if fts:
            clauses.append("e.id IN (SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?)")
            args.append(fts)
        if favourites_only:
            clauses.append("e.favourite = 1")
        if tag:
            clauses.append("e.id IN (SELECT entry_id FROM tags WHERE tag = ?)")
            args.append(tag.strip().lower())
        return " AND ".join(clauses), args

    def count(self, query: str = "", favourites_only: bool = False, tag: str | None = None) -> int:
        where, args = self._where(query, favourites_only, tag)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM entries e WHERE {where}", args).fetchone()[0])

    def page(self, offset: int, limit: int, query: str = "", favourites_only: bool = False,
             tag: str | None = None) -> list[HistoryEntry]:
        where, args = self._where(query, favourites_only, tag)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM entries e WHERE {where} ORDER BY e.created DESC, e.id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            return self._entries(rows)

    def days(self, query: str = "", favourites_only: bool = False, tag: str | None = None) -> list[tuple[str, int]]:
        """(local date "YYYY-MM-DD", how many images) for each day with matches, newest first: the
        order of :meth:`ids`, so a day's first row is the sum of the counts before it."""
        where, args = self._where(query, favourites_only, tag)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT date(e.created, 'unixepoch', 'localtime') AS day, COUNT(*) FROM entries e WHERE {where} "
                "GROUP BY day ORDER BY day DESC", args).fetchall()
        return [(str(day), int(n)) for day, n in rows]

    def ids(self, query: str = "", favourites_only: bool = False, tag: str | None = None) -> list[EntryId]:
        """Every matching id, newest first (cheap: the grid loads rows lazily by id)."""
        where, args = self._where(query, favourites_only, tag)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT e.id FROM entries e WHERE {where} ORDER BY e.created DESC, e.id DESC", args).fetchall()
        return [EntryId(r[0]) for r in rows]

    def get(self, entry_id: int) -> HistoryEntry | None:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM entries e WHERE id = ?", (entry_id,)).fetchall()
            entries = self._entries(rows)
        return entries[0] if entries else None

    def get_many(self, entry_ids: Iterable[int]) -> list[HistoryEntry]:
        ids = list(entry_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM entries e WHERE id IN ({marks})", ids).fetchall()
            by_id = {e.id: e for e in self._entries(rows)}
        return [by_id[i] for i in ids if i in by_id]  # type: ignore[index]

    def _entries(self, rows: list[tuple[Any, ...]]) -> list[HistoryEntry]:
        if not rows:
            return []
        ids = [r[0] for r in rows]
        marks = ",".join("?" * len(ids))
        tags: dict[int, list[str]] = {}
        for entry_id, tag in self._conn.execute(
                f"SELECT entry_id, tag FROM tags WHERE entry_id IN ({marks}) ORDER BY tag", ids):
            tags.setdefault(entry_id, []).append(tag)
        out = []
        for r in rows:
            settings = load_settings_json(r[15])
            out.append(HistoryEntry(
                id=EntryId(r[0]), created=r[1], path=self._abs(r[2]), prompt=r[3], negative_prompt=r[4], seed=r[5],
                width=r[6], height=r[7], steps=r[8], guidance=r[9], scheduler=r[10], model_name=r[11],
                strength=r[12], favourite=bool(r[13]), tags=tuple(tags.get(r[0], ())), parameters=r[14],
                settings=settings, source=r[16], owned=bool(r[17]), delete_error=r[18] or "",
            ))
        return out

    def recent_prompts(self, limit: int = 20) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT prompt FROM entries WHERE deleting = 0 GROUP BY prompt ORDER BY MAX(created) DESC LIMIT ?",
                (limit,)).fetchall()
        return [r[0] for r in rows]

    def all_tags(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT tag FROM tags ORDER BY tag")]

    # -- changing --------------------------------------------------------------------------
    def set_favourite(self, entry_id: int, favourite: bool) -> None:
        with self._write() as conn:
            conn.execute("UPDATE entries SET favourite = ? WHERE id = ?", (1 if favourite else 0, entry_id))

    def set_tags(self, entry_id: int, tags: Iterable[str]) -> None:
        clean = _normalise_tags(tags)
        with self._write() as conn:
            conn.execute("DELETE FROM tags WHERE entry_id = ?", (entry_id,))
            conn.executemany("INSERT INTO tags (entry_id, tag) VALUES (?, ?)", [(entry_id, t) for t in clean])

    def delete(self, entry_ids: Iterable[int], remove_file: Callable[[Path], None] | None = None) -> int:
        """Delete entries with their image (if HeyIm wrote it) and thumbnail files. Returns how many.

        ``remove_file`` disposes of each image file (the app moves it to the system Trash);
        without it the file is unlinked. Thumbnails, HeyIm's own cache, are always unlinked.
        A file that cannot be removed keeps its entry, marked "could not delete", and a
        StorageError says so after every other entry has been deleted.
        """
        ids = list(entry_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._write() as conn:
            conn.execute(f"UPDATE entries SET deleting = 1, delete_error = '' WHERE id IN ({marks})", ids)
        done, failed = self._finish_deletes(remove_file)
        if failed:
            first = next(iter(failed.values()))
            n = len(failed)
            raise StorageError(f"{n} image{'s' if n != 1 else ''} could not be deleted ({first}); "
                               f"{'they stay' if n != 1 else 'it stays'} in the history, marked \"could not delete\".")
        return done

    def _finish_deletes(self, remove_file: Callable[[Path], None] | None = None) -> tuple[int, dict[int, str]]:
        """Remove the files of entries marked for deletion, then their rows. Returns (deleted, failures)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, path, owned, settings FROM entries WHERE deleting = 1").fetchall()
        done: list[int] = []
        failed: dict[int, str] = {}
        for entry_id, stored, owned, settings_text in rows:
            targets = list(self.thumbs_dir.glob(f"{int(entry_id)}-*.jpg"))
            image = self._abs(stored) if owned else None
            if image is not None:
                targets[:0] = [image, *edit_file_paths(image, load_settings_json(settings_text))]
            for path in targets:
                try:
                    if remove_file is not None and path == image:
                        if not path.exists():
                            continue
                        remove_file(path)
                    else:
                        path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failed[entry_id] = f"could not delete {path}: {exc.strerror or exc}"
                    break
            else:
                done.append(entry_id)
        if rows:
            with self._write() as conn:
                conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in done])
                conn.executemany("UPDATE entries SET deleting = 0, delete_error = ? WHERE id = ?",
                                 [(why, i) for i, why in failed.items()])
        for entry_id, why in failed.items():
            log.warning("history entry %s: %s", entry_id, why)
        return len(done), failed

    def enforce_keep_limit(self) -> int:
        """Delete the oldest entries past ``keep_limit``; favourites (and undeletable ones) are kept."""
        if not self.keep_limit or self.keep_limit <= 0:
            return 0
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM entries WHERE deleting = 0 AND favourite = 0 AND delete_error = '' "
                "ORDER BY created DESC, id DESC LIMIT -1 OFFSET ?", (self.keep_limit,)).fetchall()
        if not rows:
            return 0
        try:
            return self.delete(r[0] for r in rows)
        except StorageError as exc:
            log.warning("keep limit: %s", exc)
            return 0

    # -- thumbnails ------------------------------------------------------------------------
    def thumbnail_path(self, entry_id: int, size: int = 256) -> Path:
        """A cached JPEG thumbnail no larger than ``size`` px; made on first request (call off the UI thread)."""
        thumb = self.thumbs_dir / f"{int(entry_id)}-{int(size)}.jpg"
        if thumb.exists():
            return thumb
        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        from PIL import Image

        from heyim_desktop.core.images import load_image

        img = load_image(entry.path)
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        tmp: Path | None = None
        try:
            with writing(self.thumbs_dir, "the thumbnail"):
                fd, tmp = new_temp_file(self.thumbs_dir, ".jpg")
                with os.fdopen(fd, "wb") as fh:
                    img.convert("RGB").save(fh, "JPEG", quality=85)
                os.replace(tmp, thumb)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return thumb

    def move_images(self, dest: Path) -> "MoveReport":
        """Move HeyIm's images into ``dest`` (which becomes the images folder); imported files stay put."""
        from heyim_desktop.store.relocate import move_images

        return move_images(self, dest)

    # -- integrity -------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Finish interrupted deletes, drop HeyIm's own temp files, re-index HeyIm PNGs saved without a row.

        One bad file never stops the history from opening: it is skipped with a log line.
        """
        from heyim_desktop.store.recovery import recover

        return recover(self)

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

