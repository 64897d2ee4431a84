"""The history database's schema and its migrations, versioned with ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from heyim_desktop.core.errors import StorageError, UserFacingError

SCHEMA_VERSION = 2

_V1 = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused: the API and UI hold them
    created REAL NOT NULL,
    path TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    width INTEGER,
    height INTEGER,
    steps INTEGER,
    guidance REAL,
    scheduler TEXT,
    model_name TEXT NOT NULL DEFAULT '',
    strength REAL,
    engine TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    parameters TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    favourite INTEGER NOT NULL DEFAULT 0,
    deleting INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX entries_newest ON entries (deleting, created DESC, id DESC);
CREATE INDEX entries_favourite ON entries (favourite, created DESC);
CREATE TABLE tags (
    entry_id INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (entry_id, tag)
) WITHOUT ROWID;
CREATE INDEX tags_by_tag ON tags (tag);
CREATE VIRTUAL TABLE entries_fts USING fts5 (
    prompt, negative_prompt, content='entries', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER entries_ai AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts (rowid, prompt, negative_prompt) VALUES (new.id, new.prompt, new.negative_prompt);
END;
CREATE TRIGGER entries_ad AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts (entries_fts, rowid, prompt, negative_prompt)
    VALUES ('delete', old.id, old.prompt, old.negative_prompt);
END;
"""

#: v2: each entry stores where its file is (absolute path, so a change of image folder orphans
#: nothing), whether HeyIm wrote that file (only those are ever deleted), and why a delete failed.
_V2 = """
ALTER TABLE entries ADD COLUMN owned INTEGER NOT NULL DEFAULT 1;
ALTER TABLE entries ADD COLUMN delete_error TEXT NOT NULL DEFAULT '';
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2}
#: ``PRAGMA application_id`` of a HeyIm history ("HeyI"): tells our database from any other SQLite file.
APPLICATION_ID = 0x48657949
_V1_ENTRIES = frozenset(
    "id created path prompt negative_prompt seed width height steps guidance scheduler model_name strength engine "
    "source parameters settings favourite deleting".split())
#: Tables and their columns, per schema version: the signature a database must show before it is written.
SIGNATURES: dict[int, dict[str, frozenset[str]]] = {
    1: {"entries": _V1_ENTRIES, "tags": frozenset({"entry_id", "tag"}),
        "entries_fts": frozenset({"prompt", "negative_prompt"})},
    2: {"entries": _V1_ENTRIES | {"owned", "delete_error"}, "tags": frozenset({"entry_id", "tag"}),
        "entries_fts": frozenset({"prompt", "negative_prompt"})},
}
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Seconds the read-only look waits for another program's lock before saying the history is busy.
BUSY_TIMEOUT_S = 5.0


class NewerSchemaError(UserFacingError):
    """The history was written by a newer HeyIm; it is left untouched."""


class NotAHistoryError(StorageError):
    """The database file is not a HeyIm history (another program's, or damaged); it is left untouched."""


def _not_ours(db_path: Path, why: str) -> NotAHistoryError:
    return NotAHistoryError(
        f"{db_path} is not a HeyIm history ({why}). It was left untouched: move it away, "
        "or choose another data folder."
    )


def busy_error(db_path: Path) -> StorageError:
    return StorageError(
        f"The history {db_path} is busy in another program (it holds a lock on the database). "
        "Close the other program or HeyIm window and try again."
    )


def read_only_error(folder: Path) -> StorageError:
    return StorageError(
        f"The history folder {folder} is read-only: HeyIm cannot save there. Make the folder and its "
        "files writable, or choose another data folder."
    )


def _header(db_path: Path) -> bytes:
    try:
        with open(db_path, "rb") as fh:
            return fh.read(100)
    except FileNotFoundError:
        return b""
    except PermissionError:
        raise StorageError(f"No permission to read the history database {db_path}. Fix its permissions.") from None
    except OSError as exc:
        raise StorageError(f"Cannot read the history database {db_path}: {exc.strerror or exc}") from None


def _header_ok(header: bytes) -> bool:
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return False
    page = int.from_bytes(header[16:18], "big")
    page_ok = page == 1 or (512 <= page <= 32768 and page & (page - 1) == 0)
    return page_ok and header[18] in (1, 2) and header[19] in (1, 2) and header[21:24] == b"\x40\x20\x20"


def read_version(db_path: Path) -> int:
    """The file's schema version, read from the header bytes: nothing is written, no -wal/-shm made."""
    header = _header(db_path)
    if not header:
        return 0
    if not _header_ok(header):
        raise _not_ours(db_path, "it is damaged or not a SQLite database")
    return int.from_bytes(header[60:64], "big", signed=True)


def check_not_newer(db_path: Path) -> int:
    """Look at the header only; raise for a newer HeyIm's history or a file that is not ours."""
    header = _header(db_path)
    if not header:
        return 0
    if not _header_ok(header):
        raise _not_ours(db_path, "it is damaged or not a SQLite database")
    version = int.from_bytes(header[60:64], "big", signed=True)
    app_id = int.from_bytes(header[68:72], "big", signed=False)
    if app_id not in (0, APPLICATION_ID):
        raise _not_ours(db_path, f"it belongs to another program, application id {app_id:#x}")
    if version < 0:
        raise _not_ours(db_path, f"its schema version {version} is not one HeyIm writes")
    if version > SCHEMA_VERSION:
        if app_id != APPLICATION_ID:  # every HeyIm past schema 1 stamps its id
            raise _not_ours(db_path, f"schema version {version} without HeyIm's application id")
        raise NewerSchemaError(
            f"The history at {db_path.parent} was written by a newer HeyIm (schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}). It was left untouched: update HeyIm, or choose another data folder."
        )
    return version


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def signature_problem(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """(user_version, why it is not a HeyIm history or None) for an open connection."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0]) & 0xFFFFFFFF
    objects = conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    if app_id not in (0, APPLICATION_ID):
        return version, f"it belongs to another program, application id {app_id:#x}"
    if version < 0 or version > SCHEMA_VERSION:
        return version, f"schema version {version}"
    if version == 0:
        names = sorted(name for _kind, name in objects)
        return version, (f"it holds another program's tables: {', '.join(names[:5])}" if names else None)
    if version >= 2 and app_id != APPLICATION_ID:
        return version, "HeyIm's application id is missing"
    tables = {name for kind, name in objects if kind == "table"}
    for table, columns in SIGNATURES[version].items():
        if table not in tables:
            return version, f"it has no {table} table"
        found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if found != columns:
            missing = sorted(columns - found)
            return version, (f"its {table} table lacks {', '.join(missing)}" if missing
                             else f"its {table} table has other columns")
    return version, None


def inspect_database(db_path: Path) -> int:
    """Check, read-only, that ``db_path`` is missing, empty or a HeyIm history. Returns its version.

    Nothing is written: the header is read first, then a read-only connection lists the
    tables and columns. A WAL database without a ``-wal`` file is read as immutable, so not
    even ``-shm`` is created next to another program's file.
    """
    version = check_not_newer(db_path)
    header = _header(db_path)
    if not header:
        return 0
    wal_file = Path(str(db_path) + "-wal")
    flags = "mode=ro&immutable=1" if header[18] == 2 and not wal_file.exists() else "mode=ro"
    uri = f"{db_path.resolve().as_uri()}?{flags}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"Cannot read the history database {db_path}: {exc}") from exc
    try:
        version, problem = signature_problem(conn)
    except sqlite3.DatabaseError as exc:
        if _is_locked(exc):
            raise busy_error(db_path) from exc
        raise _not_ours(db_path, f"it is damaged or not a SQLite database: {exc}") from exc
    finally:
        conn.close()
    if problem:
        raise _not_ours(db_path, problem)
    return version


def migrate(conn: sqlite3.Connection, fix_paths: "Callable[[sqlite3.Connection], None] | None" = None) -> None:
    """Bring a HeyIm history (checked by :func:`inspect_database`) to ``SCHEMA_VERSION``.

    The signature is checked again inside the write transaction: another program may have
    changed the file between the read-only look and now.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version, problem = signature_problem(conn)
        if version > SCHEMA_VERSION and not problem:
            raise NewerSchemaError(f"The history database has schema {version}, newer than this HeyIm supports.")
        if problem:
            raise NotAHistoryError(f"The history database is not a HeyIm history ({problem}); it was left untouched.")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[target]):
                conn.execute(statement)
            if target == 2 and version >= 1 and fix_paths is not None:
                fix_paths(conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (triggers keep their inner semicolons)."""
    out: list[str] = []
    buf = ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
