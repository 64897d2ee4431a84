from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.store import SCHEMA_VERSION, HistoryStore, NewerSchemaError
from history_helpers import make_result


@pytest.fixture()
def store(tmp_path: Path) -> HistoryStore:
    s = HistoryStore.open(tmp_path / "history")
    yield s
    s.close()


def test_save_then_read_newest_first(store: HistoryStore) -> None:
    first = store.save_result(make_result("a red fox", count=2, seed=10))
    second = store.save_result(make_result("a blue whale", seed=3, negative_prompt="blurry"))
    assert len(first) == 2 and all(e.path.is_file() for e in first + second)
    assert [e.seed for e in first] == [10, 11]
    page = store.page(0, 10)
    assert [e.id for e in page] == [second[0].id, first[1].id, first[0].id]
    assert store.count() == 3
    e = store.get(second[0].id)
    assert e is not None and e.negative_prompt == "blurry" and e.width == 64 and e.model_name == "tiny"
    assert "Seed: 3" in e.parameters
    req = GenerationRequest(**e.request_settings())
    assert req.prompt == "a blue whale" and req.seed == 3 and req.negative_prompt == "blurry"
    assert store.recent_prompts() == ["a blue whale", "a red fox"]


def test_full_text_search_prefix_and_filters(store: HistoryStore) -> None:
    fox = store.save_result(make_result("a red fox in the snow"))[0]
    store.save_result(make_result("portrait of a cat"))
    assert [e.id for e in store.page(0, 10, query="fox")] == [fox.id]
    assert store.count(query="sno") == 1  # prefix: search as you type
    assert store.count(query="red snow") == 1 and store.count(query="red cat") == 0
    assert store.count(query='"; DROP TABLE entries; --') == 0  # quoting is safe
    assert store.count(query="   ") == 2
    store.set_favourite(fox.id, True)
    assert [e.id for e in store.page(0, 10, favourites_only=True)] == [fox.id]
    store.set_tags(fox.id, ["Winter", " animals ", "winter"])
    assert store.get(fox.id).tags == ("animals", "winter")  # type: ignore[union-attr]
    assert store.count(tag="WINTER") == 1 and store.all_tags() == ["animals", "winter"]


def test_delete_removes_rows_files_and_thumbnails(store: HistoryStore) -> None:
    a, b = store.save_result(make_result(count=2))
    thumb = store.thumbnail_path(a.id, 128)
    assert thumb.is_file() and Image.open(thumb).size[0] <= 128
    assert store.delete([a.id]) == 1
    assert store.get(a.id) is None and not a.path.exists() and not thumb.exists()
    assert store.get(b.id) is not None and b.path.exists()
    assert store.count(query="fox") == 1


def test_keep_limit_keeps_newest_and_favourites(store: HistoryStore) -> None:
    old = store.save_result(make_result("old one"))[0]
    store.set_favourite(old.id, True)
    for i in range(4):
        store.save_result(make_result(f"image {i}", seed=i))
    store.keep_limit = 2
    assert store.enforce_keep_limit() == 2
    assert [e.prompt for e in store.page(0, 10)] == ["image 3", "image 2", "old one"]


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    root = tmp_path / "history"
    HistoryStore.open(root).close()
    db = root / "history.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    listing = sorted(p.name for p in root.iterdir())
    with pytest.raises(NewerSchemaError, match="newer HeyIm"):
        HistoryStore.open(root)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in root.iterdir()) == listing


def test_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "history"
    root.mkdir()
    (root / "history.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="damaged"):
        HistoryStore.open(root)


def test_orphan_png_is_reindexed_and_only_our_temp_files_dropped(tmp_path: Path) -> None:
    root = tmp_path / "history"
    with HistoryStore.open(root) as s:
        entry = s.save_result(make_result("kept safe", seed=5))[0]
        with s._write() as conn:  # simulate a crash after the file, before the row
            conn.execute("DELETE FROM entries")
        users = entry.path.parent / ".tmp-abc.png"  # looks like a temp file, but HeyIm did not make it
        users.write_bytes(b"partial")
        s.temp_dir.mkdir(exist_ok=True)
        dead = s.temp_dir / "heyim-4194999-0123456789abcdef.png.part"  # a writer that died (no such pid)
        dead.write_bytes(b"partial")
        alive = s.temp_dir / f"heyim-{os.getpid()}-0123456789abcdef.png.part"  # a writer still at work
        alive.write_bytes(b"partial")
    with HistoryStore.open(root) as s:
        (back,) = s.page(0, 5)
        assert back.prompt == "kept safe" and back.seed == 5 and back.source == "recovered" and back.owned
        assert users.exists() and alive.exists() and not dead.exists()


CHILD = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests_store_child import run
run(Path(sys.argv[1]))
"""

CHILD_MODULE = r'''
from PIL import Image
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult
from heyim_desktop.store import HistoryStore

def run(root):
    store = HistoryStore.open(root)
    n = 0
    while True:
        n += 1
        req = GenerationRequest(prompt=f"crash test {n}", seed=n, width=64, height=64)
        res = GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64), (n % 255, 0, 0)), n, 0),), "m", "e", {})
        (entry,) = store.save_result(res)
        if n % 7 == 0:
            store.delete([entry.id])
            print(f"deleted {entry.id}", flush=True)
        else:
            print(f"saved {entry.id}", flush=True)
'''


def test_sigkill_at_random_moments_never_corrupts_or_loses(tmp_path: Path) -> None:
    import heyim_desktop

    root = tmp_path / "history"
    helper_dir = tmp_path / "child"
    helper_dir.mkdir()
    (helper_dir / "tests_store_child.py").write_text(CHILD_MODULE, encoding="utf-8")
    src = str(Path(heyim_desktop.__file__).parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(helper_dir)]))
    rng = random.Random(1234)
    committed: set[int] = set()
    deleted: set[int] = set()
    for _round in range(12):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(helper_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 8)):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            kind, entry_id = line.split()
            (committed if kind == "saved" else deleted).add(int(entry_id))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with HistoryStore.open(root) as s:
        assert s.integrity_check() == "ok"
        entries = s.page(0, 10_000)
        ids = {e.id for e in entries}
        assert committed <= ids, "a committed row was lost"
        assert not (deleted & ids), "a deleted row came back"
        assert all(e.path.is_file() for e in entries), "a row without its file"
        pngs = [p for p in (root / "images").rglob("*.png")]
        assert len(pngs) == len(entries), "an image file without a row"
