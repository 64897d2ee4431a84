"""The history: every generated image as a PNG file plus a row in SQLite.

Files first, then rows: an image file is complete on disk (atomic write) before its row is
committed, so every row has its file. A crash between the two leaves a PNG without a row;
it carries its own metadata and is re-indexed at the next open, so nothing is lost.
Deleting marks rows first, removes files, then removes rows; an interrupted delete is
finished at the next open.
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
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NewType

from heyim_desktop.core import paths
from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.metadata import format_parameters, parse_parameters
from heyim_desktop.core.output import image_filename, write_png_atomic
from heyim_desktop.store.schema import NewerSchemaError, check_not_newer, migrate

if TYPE_CHECKING:
    from heyim_desktop.core.jobs import Job
    from heyim_desktop.core.result import GenerationResult

log = logging.getLogger(__name__)

EntryId = NewType("EntryId", int)
DB_NAME = "history.sqlite3"

__all__ = ["EntryId", "HistoryEntry", "HistoryStore", "NewerSchemaError"]

_COLUMNS = (
    "id, created, path, prompt, negative_prompt, seed, width, height, steps, guidance, scheduler, "
    "model_name, strength, favourite, parameters, settings, source"
)


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

    def request_settings(self) -> dict[str, Any]:
        """Keyword arguments for GenerationRequest that reproduce this image."""
        if self.settings:
            keys = ("prompt", "negative_prompt", "steps", "guidance", "seed", "width", "height", "scheduler",
                    "strength", "guidance_boost", "model", "refiner", "refiner_switch")
            return {k: self.settings[k] for k in keys if self.settings.get(k) is not None}
        return parse_parameters(self.parameters).request_settings() if self.parameters else {"prompt": self.prompt}


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


class HistoryStore:
    """Thread-safe: one connection behind a lock (writes are small; readers page)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, images_dir: Path) -> None:
        self.root = root
        self.images_dir = images_dir
        self.thumbs_dir = root / "thumbnails"
        self._conn = conn
        self._lock = threading.RLock()
        self.keep_limit: int | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | None = None, *, images_dir: Path | None = None, recover: bool = True) -> HistoryStore:
        root = Path(root) if root is not None else paths.data_dir() / "history"
        db_path = root / DB_NAME
        check_not_newer(db_path)  # read-only look first: a newer database is never touched
        try:
            root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"Cannot open the history in {root}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except NewerSchemaError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StorageError(f"The history database {db_path} is damaged ({exc}).") from exc
        store = cls(root, conn, Path(images_dir) if images_dir else root / "images")
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
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if "full" in text:
                    raise StorageError("The disk is full: the history could not be updated. Free some space.") from exc
                if "locked" in text or "busy" in text:
                    raise StorageError("The history is busy in another HeyIm window; try again.") from exc
                raise StorageError(f"The history could not be updated: {exc}") from exc

    # -- paths -----------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.images_dir.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def _abs(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.images_dir / p

    # -- saving ----------------------------------------------------------------------------
    def save_result(self, result: "GenerationResult", job: "Job | None" = None) -> list[HistoryEntry]:
        """Write every image of ``result`` (file first), then its row. Returns the new entries."""
        request = result.request
        folder = self.images_dir / time.strftime("%Y-%m")
        entries = []
        for item in result.images:
            params = format_parameters(request, item.seed, result.model_name)
            settings = dict(request.settings(), seed=item.seed, count=1, model_name=result.model_name,
                            engine=result.engine)
            path = write_png_atomic(item.image, folder / image_filename(request.prompt, item.seed), params, settings)
            entries.append(self._insert(path, params, settings, source=job.source if job else ""))
        self.enforce_keep_limit()
        return entries

    def import_image(self, path: Path, *, source: str = "import") -> HistoryEntry:
        """Index an existing PNG (with HeyIm or AUTOMATIC1111 metadata) that lies in the images folder."""
        from PIL import Image

        with Image.open(path) as img:
            info = dict(img.info)
        params = info.get("parameters") or ""
        try:
            settings = json.loads(info.get("heyim") or "{}")
        except json.JSONDecodeError:
            settings = {}
        if not isinstance(settings, dict):
            settings = {}
        if not settings and params:
            settings = parse_parameters(params).request_settings()
        settings.setdefault("prompt", parse_parameters(params).prompt if params else "")
        return self._insert(Path(path), params, settings, source=source, created=Path(path).stat().st_mtime)

    def _insert(self, path: Path, params: str, settings: dict[str, Any], *, source: str,
                created: float | None = None) -> HistoryEntry:
        row = (
            created if created is not None else time.time(), self._rel(path), settings.get("prompt") or "",
            settings.get("negative_prompt") or "", settings.get("seed"), settings.get("width"),
            settings.get("height"), settings.get("steps"), settings.get("guidance"), settings.get("scheduler"),
            settings.get("model_name") or settings.get("model") or "", settings.get("strength"),
            settings.get("engine") or "", source, params, json.dumps(settings, ensure_ascii=False),
        )
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO entries (created, path, prompt, negative_prompt, seed, width, height, steps, guidance, "
                "scheduler, model_name, strength, engine, source, parameters, settings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            entry_id = EntryId(int(cur.lastrowid or 0))
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
            try:
                settings = json.loads(r[15]) if r[15] else {}
            except json.JSONDecodeError:
                settings = {}
            out.append(HistoryEntry(
                id=EntryId(r[0]), created=r[1], path=self._abs(r[2]), prompt=r[3], negative_prompt=r[4], seed=r[5],
                width=r[6], height=r[7], steps=r[8], guidance=r[9], scheduler=r[10], model_name=r[11],
                strength=r[12], favourite=bool(r[13]), tags=tuple(tags.get(r[0], ())), parameters=r[14],
                settings=settings, source=r[16],
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

    def delete(self, entry_ids: Iterable[int]) -> int:
        """Delete entries with their image and thumbnail files. Returns how many were deleted."""
        ids = list(entry_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._write() as conn:
            conn.execute(f"UPDATE entries SET deleting = 1 WHERE id IN ({marks})", ids)
        return self._finish_deletes()

    def _finish_deletes(self) -> int:
        with self._lock:
            rows = self._conn.execute("SELECT id, path FROM entries WHERE deleting = 1").fetchall()
        for entry_id, stored in rows:
            for path in [self._abs(stored), *self.thumbs_dir.glob(f"{entry_id}-*.jpg")]:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise StorageError(f"Cannot delete {path}: {exc.strerror or exc}") from exc
        if rows:
            with self._write() as conn:
                conn.execute("DELETE FROM entries WHERE deleting = 1")
        return len(rows)

    def enforce_keep_limit(self) -> int:
        """Delete the oldest entries past ``keep_limit``; favourites are always kept."""
        if not self.keep_limit or self.keep_limit <= 0:
            return 0
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM entries WHERE deleting = 0 AND favourite = 0 ORDER BY created DESC, id DESC "
                "LIMIT -1 OFFSET ?", (self.keep_limit,)).fetchall()
        return self.delete(r[0] for r in rows) if rows else 0

    # -- thumbnails ------------------------------------------------------------------------
    def thumbnail_path(self, entry_id: int, size: int = 256) -> Path:
        """A cached JPEG thumbnail no larger than ``size`` px; made on first request (call off the UI thread)."""
        thumb = self.thumbs_dir / f"{entry_id}-{size}.jpg"
        if thumb.exists():
            return thumb
        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        from PIL import Image

        from heyim_desktop.core.images import load_image

        img = load_image(entry.path)
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        self.thumbs_dir.mkdir(parents=True, exist_ok=True)
        tmp = thumb.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        img.save(tmp, "JPEG", quality=85)
        os.replace(tmp, thumb)
        return thumb

    # -- integrity -------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Finish interrupted deletes, drop temp files, re-index PNGs saved without a row."""
        report = {"deletes": self._finish_deletes(), "temp_files": 0, "reindexed": 0}
        if not self.images_dir.is_dir():
            return report
        with self._lock:
            known = {r[0] for r in self._conn.execute("SELECT path FROM entries")}
        folders = [(self.images_dir, "")] + [
            (Path(d.path), d.name + "/") for d in os.scandir(self.images_dir) if d.is_dir()
        ]
        for folder, prefix in folders:
            for item in os.scandir(folder):
                if not item.is_file():
                    continue
                if item.name.startswith(".tmp-"):
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
                    report["temp_files"] += 1
                elif item.name.endswith(".png") and prefix + item.name not in known:
                    try:
                        self.import_image(folder / item.name, source="recovered")
                        report["reindexed"] += 1
                    except (OSError, ValueError, StorageError) as exc:
                        log.warning("could not re-index %s: %s", item.path, exc)
        if report["reindexed"] or report["temp_files"] or report["deletes"]:
            log.info("history recovery: %s", report)
        return report

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
