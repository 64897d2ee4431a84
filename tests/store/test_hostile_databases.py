"""Databases that are not (or no longer) a HeyIm history: a clear error, and the file left byte-identical."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable

import pytest

from heyim_desktop.core.errors import DiskFull, StorageError
from heyim_desktop.store import HistoryStore, NewerSchemaError, opening, schema
from heyim_desktop.store.schema import APPLICATION_ID, SCHEMA_VERSION, NotAHistoryError
from history_helpers import make_result


def _listing(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.is_file()}


def _foreign(sql: str, *, journal: str = "DELETE") -> Callable[[Path], None]:
    def make(db: Path) -> None:
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.executescript(sql)
        conn.commit()
        conn.close()
    return make


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "another app's entries table": (
        _foreign("CREATE TABLE entries (id INTEGER PRIMARY KEY, title TEXT); INSERT INTO entries VALUES (1, 'x');"),
        "another program's tables: entries"),
    "another app's entries table, in WAL mode": (
        _foreign("CREATE TABLE entries (id INTEGER PRIMARY KEY, title TEXT);", journal="WAL"), "another program"),
    "user_version 1, another schema": (
        _foreign("CREATE TABLE entries (id INTEGER PRIMARY KEY, path TEXT); CREATE TABLE tags (entry_id, tag);"
                 "CREATE TABLE entries_fts (prompt, negative_prompt); PRAGMA user_version = 1;"), "lacks"),
    "a negative user_version": (_foreign("CREATE TABLE t (x); PRAGMA user_version = -2;"), "schema version -2"),
    "another program's application id": (
        _foreign("CREATE TABLE t (x); PRAGMA application_id = 1234;"), "another program"),
    "a foreign file without entries": (_foreign("CREATE TABLE notes (body TEXT);"), "another program"),
    "a large user_version, not ours": (_foreign("CREATE TABLE t (x); PRAGMA user_version = 77;"),
                                       "without HeyIm's application id"),
    "SQLite magic then garbage": (lambda db: db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000)),
                                  "damaged or not a SQLite database"),
    "not SQLite at all": (lambda db: db.write_bytes(b"this is not sqlite" * 100), "damaged or not a SQLite"),
    "a short file": (lambda db: db.write_bytes(b"SQLite format 3\x00\x10"), "damaged or not a SQLite"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_database_that_is_not_ours_is_refused_and_left_byte_identical(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    root = tmp_path / "history"
    root.mkdir()
    make(root / "history.sqlite3")
    before = _listing(root)
    with pytest.raises(NotAHistoryError, match=message) as info:
        HistoryStore.open(root)
    assert "not a HeyIm history" in str(info.value) and "left untouched" in str(info.value)
    assert "newer" not in str(info.value)
    assert _listing(root) == before, "the foreign database (or the folder) was modified"
    if case == "a foreign file without entries":
        tables = {r[0] for r in sqlite3.connect(root / "history.sqlite3").execute("SELECT name FROM sqlite_master")}
        assert tables == {"notes"}


def test_our_newer_schema_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "history"
    HistoryStore.open(root).close()
    conn = sqlite3.connect(root / "history.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(NewerSchemaError, match="newer HeyIm"):
        HistoryStore.open(root)


def test_a_new_history_is_stamped_with_our_application_id(tmp_path: Path) -> None:
    root = tmp_path / "history"
    root.mkdir()
    (root / "history.sqlite3").write_bytes(b"")  # an empty file is a new database
    HistoryStore.open(root).close()
    conn = sqlite3.connect(root / "history.sqlite3")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_read_only_folder_says_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "history"
    HistoryStore.open(root).close()
    real = os.access
    monkeypatch.setattr(opening.os, "access", lambda p, mode: False if mode == os.W_OK else real(p, mode))
    with pytest.raises(StorageError, match="read-only.*writable, or choose another data folder") as info:
        HistoryStore.open(root)
    assert "damaged" not in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.parametrize("what", ["folder", "file and folder"])
def test_real_read_only_permissions_say_read_only(tmp_path: Path, what: str) -> None:
    root = tmp_path / "history"
    HistoryStore.open(root).close()
    if what == "file and folder":
        os.chmod(root / "history.sqlite3", 0o444)
    os.chmod(root, 0o555)
    try:
        with pytest.raises(StorageError, match="read-only"):
            HistoryStore.open(root)
    finally:
        os.chmod(root, 0o755)


def test_sqlite_saying_readonly_is_read_only_not_damaged(tmp_path: Path) -> None:
    exc = sqlite3.OperationalError("attempt to write a readonly database")
    err = opening.sqlite_storage_error(exc, tmp_path, tmp_path / "history.sqlite3")
    assert err is not None and "read-only" in str(err)


def test_a_lock_held_by_another_program_says_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "history"
    with HistoryStore.open(root) as store:
        store.save_result(make_result())
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(opening, "WRITE_TIMEOUT_S", 0.05)
    other = sqlite3.connect(root / "history.sqlite3", isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")  # another program, with a rollback journal
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE entries SET favourite = 1")
    try:
        with pytest.raises(StorageError, match="busy in another program.*try again") as info:
            HistoryStore.open(root)
        assert "damaged" not in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with HistoryStore.open(root) as store:
        assert store.count() == 1 and store.integrity_check() == "ok"


def test_a_full_disk_during_save_says_full_not_damaged(tmp_path: Path) -> None:
    root = tmp_path / "history"
    store = HistoryStore.open(root)
    store.save_result(make_result())
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(DiskFull, match="disk is full") as info:
        store.save_result(make_result("x" * 9000, count=4))
    assert str(root) in str(info.value) and "damaged" not in str(info.value)
    store.close()
    with HistoryStore.open(root) as again:  # intact once space is back; the saved PNG is re-indexed
        assert again.integrity_check() == "ok" and again.count() == 2  # the first PNG was written, then the row failed


@pytest.mark.parametrize("text", ["disk I/O error", "unable to open database file"])
def test_an_io_error_with_no_space_left_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      text: str) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))  # type: ignore[attr-defined]
    err = opening.sqlite_storage_error(sqlite3.OperationalError(text), tmp_path, tmp_path / "h")
    assert isinstance(err, DiskFull) and str(tmp_path) in str(err)


def test_a_full_disk_at_open_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "history"

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(DiskFull, match="disk is full"):
        HistoryStore.open(root)


def test_another_process_changing_the_file_between_look_and_write_is_caught(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "history"
    root.mkdir()
    db = root / "history.sqlite3"
    real = schema.inspect_database

    def look_then_swap(path: Path) -> int:
        version = real(path)  # nothing there yet: fine
        _foreign("CREATE TABLE notes (body TEXT);")(db)  # another program creates its file meanwhile
        return version

    monkeypatch.setattr("heyim_desktop.store.history.inspect_database", look_then_swap)
    with pytest.raises(NotAHistoryError):
        HistoryStore.open(root)
    assert {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")} == {"notes"}


def test_concurrent_opens_of_a_new_history_both_succeed(tmp_path: Path) -> None:
    root = tmp_path / "history"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            HistoryStore.open(root).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
