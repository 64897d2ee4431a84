"""The history database's schema and its migrations, versioned with ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from heyim_desktop.core.errors import StorageError, UserFacingError

SCHEMA_VERSION = 1

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
CREATE INDEX entries_newest ON entries (created DESC, id DESC);
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

MIGRATIONS: dict[int, str] = {1: _V1}


class NewerSchemaError(UserFacingError):
    """The history was written by a newer HeyIm; it is left untouched."""


def read_version(db_path: Path) -> int:
    """The file's schema version, read from the header bytes: nothing is written, no -wal/-shm made."""
    try:
        with open(db_path, "rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StorageError(f"Cannot read the history database {db_path}: {exc.strerror or exc}") from None
    if not header:
        return 0
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StorageError(f"The history database {db_path} is damaged or not a database.")
    return int.from_bytes(header[60:64], "big", signed=True)


def check_not_newer(db_path: Path) -> int:
    version = read_version(db_path)
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"The history at {db_path.parent} was written by a newer HeyIm (schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}). It was left untouched: update HeyIm, or choose another data folder."
        )
    return version


def migrate(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:  # another process upgraded it meanwhile
        raise NewerSchemaError(f"The history database has schema {version}, newer than this HeyIm supports.")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[target]}\nPRAGMA user_version = {target};\nCOMMIT;")
