"""The history touches only files it wrote: a shared images folder, folder changes, races, undeletable files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.storage import place_exclusively
from heyim_desktop.store import HistoryStore
from heyim_desktop.store.schema import _V1
from history_helpers import make_result


def _png(path: Path, **texts: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, pnginfo=info)
    return path


def _snapshot(folder: Path, skip: Path | None = None) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and (skip is None or skip not in p.parents)}


def test_a_shared_pictures_folder_keeps_every_file_of_the_user(tmp_path: Path) -> None:
    pictures = tmp_path / "Pictures"
    users = [
        _png(pictures / "cat.png"),
        _png(pictures / "2019-holiday" / "beach.png", parameters="beach\nSteps: 20, Seed: 1, Size: 8x8"),
        _png(pictures / "2024-05" / "20240501-101010-7-my-own.png"),  # a HeyIm-like name, no HeyIm marker
        _png(pictures / "2024-05" / "20240501-101011-8-exported.png",
             heyim=json.dumps({"prompt": "made with HeyIm, exported by hand", "seed": 8})),
    ]
    (pictures / ".tmp-thesis-draft.docx").write_bytes(b"draft")
    (pictures / "2019-holiday" / ".tmp-upload.part").write_bytes(b"upload")
    (pictures / "2024-05" / ".tmp-xyz.png").write_bytes(b"someone's temp")
    before = _snapshot(pictures)
    with HistoryStore.open(tmp_path / "history", images_dir=pictures) as store:
        assert store.count() == 0, "the user's own pictures were imported as history"
        for i in range(4):
            store.save_result(make_result(f"ours {i}", seed=i))
        store.keep_limit = 2
        store.enforce_keep_limit()
        assert store.count() == 2
    with HistoryStore.open(tmp_path / "history", images_dir=pictures) as store:
        assert store.count() == 2
        ours = {str(e.path.relative_to(pictures)) for e in store.page(0, 10)}
    after = _snapshot(pictures)
    assert {k: v for k, v in after.items() if k not in ours} == before, "a file of the user's changed or vanished"
    assert all(p.exists() for p in users)


def test_changing_the_images_folder_orphans_nothing(tmp_path: Path) -> None:
    root = tmp_path / "history"
    with HistoryStore.open(root, images_dir=tmp_path / "chosen") as store:
        saved = [store.save_result(make_result(f"img {i}", seed=i))[0] for i in range(3)]
    with HistoryStore.open(root) as store:  # what `serve` did: the default folder
        entries = store.page(0, 10)
        assert len(entries) == 3 and all(e.path.is_file() for e in entries)
        assert {e.path for e in entries} == {e.path for e in saved}
        new = store.save_result(make_result("after the change"))[0]
        assert new.path.is_relative_to(root / "images")


def _v1_history(root: Path, images: Path, rows: list[tuple[str, str, str]]) -> None:
    """A history as HeyIm schema 1 wrote it: relative paths, no application id."""
    root.mkdir(parents=True)
    conn = sqlite3.connect(root / "history.sqlite3")
    conn.executescript(_V1 + "\nPRAGMA user_version = 1;")
    for rel, source, settings in rows:
        conn.execute("INSERT INTO entries (created, path, prompt, source, settings) VALUES (1, ?, 'p', ?, ?)",
                     (rel, source, settings))
        _png(images / rel)
    conn.commit()
    conn.close()


def test_schema_1_paths_become_absolute_and_files_it_wrongly_indexed_are_not_deleted(tmp_path: Path) -> None:
    root, images = tmp_path / "history", tmp_path / "Pictures"
    _v1_history(root, images, [
        ("2025-01/20250101-000000-1-ours.png", "", json.dumps({"prompt": "p", "engine": "torch-cpu"})),
        ("holiday.png", "recovered", json.dumps({"prompt": ""})),  # a user's picture the old recovery took in
    ])
    with HistoryStore.open(root, images_dir=images) as store:
        ours, users = sorted(store.page(0, 10), key=lambda e: e.source)
        assert ours.path == (images / "2025-01/20250101-000000-1-ours.png").resolve() and ours.owned
        assert users.path == (images / "holiday.png").resolve() and not users.owned
        store.delete([ours.id, users.id])
    assert not (images / "2025-01/20250101-000000-1-ours.png").exists()
    assert (images / "holiday.png").exists(), "deleting the entry deleted the user's file"
    with HistoryStore.open(root, images_dir=tmp_path / "elsewhere") as store:
        assert store.count() == 0


def test_an_imported_file_is_never_deleted_with_its_entry(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path / "history") as store:
        mine = _png(tmp_path / "mine.png", parameters="a cat\nSteps: 20, Seed: 5, Size: 64x64")
        entry = store.import_image(mine)
        assert not entry.owned and entry.seed == 5
        thumb = store.thumbnail_path(entry.id, 32)
        assert store.delete([entry.id]) == 1
        assert mine.exists() and not thumb.exists()


def test_the_same_name_at_the_same_moment_never_overwrites(tmp_path: Path) -> None:
    final = tmp_path / "same.png"
    barrier = threading.Barrier(16)
    placed: list[Path] = []

    def one(i: int) -> None:
        tmp = tmp_path / f"tmp-{i}"
        tmp.write_bytes(str(i).encode())
        barrier.wait()
        placed.append(place_exclusively(tmp, final))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(placed)) == 16
    assert sorted(p.read_bytes() for p in placed) == sorted(str(i).encode() for i in range(16))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in placed)


def test_two_stores_on_one_folder_save_the_same_prompt_seed_and_second(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "2026-01" if fmt == "%Y-%m" else "20260101-120000")
    root = tmp_path / "history"
    a, b = HistoryStore.open(root), HistoryStore.open(root)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(store: HistoryStore) -> None:
        barrier.wait()
        try:
            for _ in range(25):
                store.save_result(make_result("same prompt", seed=42))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = a.page(0, 100)
    assert len(entries) == 50 and len({e.path for e in entries}) == 50
    assert len(list((root / "images" / "2026-01").glob("*.png"))) == 50
    a.close()
    b.close()


CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
time.strftime = lambda fmt, *a: "2026-01" if fmt == "%Y-%m" else "20260101-120000"
from pathlib import Path
from PIL import Image
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult
from heyim_desktop.store import HistoryStore
store = HistoryStore.open(Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    req = GenerationRequest(prompt="same", seed=7, width=64, height=64)
    img = Image.new("RGB", (64, 64), (n % 255, int(sys.argv[4]), 0))
    store.save_result(GenerationResult(req, (GeneratedImage(img, 7, 0),), "m", "e", {}))
print("ok", flush=True)
"""


def test_two_processes_saving_the_same_name_overwrite_nothing(tmp_path: Path) -> None:
    import heyim_desktop

    src = str(Path(heyim_desktop.__file__).parent.parent)
    root = tmp_path / "history"
    HistoryStore.open(root).close()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), src, "60", str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    with HistoryStore.open(root) as store:
        entries = store.page(0, 1000)
        assert len(entries) == 120 and len({e.path for e in entries}) == 120
        colours = {Image.open(e.path).getpixel((0, 0)) for e in entries}
        assert len(colours) == 120, "an image was overwritten by the other process"


def test_an_undeletable_file_is_marked_and_the_history_still_opens(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "history"
    with HistoryStore.open(root) as store:
        stuck, fine = store.save_result(make_result(count=2))
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == stuck.path:
            raise PermissionError(1, "Operation not permitted")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with HistoryStore.open(root) as store:
        with pytest.raises(StorageError, match="could not be deleted.*Operation not permitted"):
            store.delete([stuck.id, fine.id])
        assert store.get(fine.id) is None and not fine.path.exists()
        kept = store.get(stuck.id)
        assert kept is not None and "could not delete" in kept.delete_error and store.count() == 1
        with store._write() as conn:  # a delete interrupted earlier, of a file that cannot be removed
            conn.execute("UPDATE entries SET deleting = 1")
    with HistoryStore.open(root) as store:  # opens anyway
        (back,) = store.page(0, 10)
        assert back.id == stuck.id and back.delete_error
        store.keep_limit = 1
        store.save_result(make_result("new"))
        store.enforce_keep_limit()  # never raises for the undeletable one
    monkeypatch.setattr(Path, "unlink", real_unlink)
    with HistoryStore.open(root) as store:
        assert store.delete([stuck.id]) == 1 and not stuck.path.exists()


def test_output_pngs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with HistoryStore.open(tmp_path / "history") as store:
            entry = store.save_result(make_result())[0]
            assert entry.path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        with HistoryStore.open(tmp_path / "history") as store:
            entry = store.save_result(make_result())[0]
            assert entry.path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_thumbnail_temp_files_are_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    root = tmp_path / "history"
    with HistoryStore.open(root) as store:
        entry = store.save_result(make_result())[0]
        store.thumbs_dir.mkdir(parents=True, exist_ok=True)
        old_style = store.thumbs_dir / "1-256.999.123.tmp"  # what earlier versions left behind
        old_style.write_bytes(b"x")

        def full(self: Image.Image, fp: object, *a: object, **k: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Image.Image, "save", full)
        with pytest.raises(StorageError, match="disk is full.*thumbnails"):
            store.thumbnail_path(entry.id, 64)
        monkeypatch.undo()
        assert [p.name for p in store.thumbs_dir.iterdir()] == [old_style.name]
    with HistoryStore.open(root) as store:
        assert list(store.thumbs_dir.iterdir()) == []
        assert store.thumbnail_path(entry.id, 64).is_file()


def test_moving_the_images_is_an_explicit_action(tmp_path: Path) -> None:
    root, old, new = tmp_path / "history", tmp_path / "old", tmp_path / "new"
    with HistoryStore.open(root, images_dir=old) as store:
        ours = store.save_result(make_result(count=2))
        users = store.import_image(_png(tmp_path / "mine.png", parameters="m\nSteps: 1, Seed: 1, Size: 8x8"))
        report = store.move_images(new)
        assert (report.moved, report.kept, report.missing) == (2, 1, 0)
        entries = {e.id: e for e in store.page(0, 10)}
        for e in ours:
            assert not e.path.exists() and entries[e.id].path.is_file()
            assert entries[e.id].path.parent.parent == new.resolve()
        assert entries[users.id].path == (tmp_path / "mine.png").resolve() and users.path.exists()
        assert store.save_result(make_result("after"))[0].path.is_relative_to(new.resolve())
    assert not list(old.rglob("*.png")) and not (new / ".heyim-partial").exists()


def test_history_move_from_the_command_line(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.store.preferences import load_preferences

    with HistoryStore.open() as store:
        (entry,) = store.save_result(make_result())
    assert main(["history", "move", str(tmp_path / "elsewhere")]) == 0
    assert "Moved 1 image(s)" in capsys.readouterr().out
    assert load_preferences().output_folder == str((tmp_path / "elsewhere").resolve())
    with HistoryStore.open() as store:
        (back,) = store.page(0, 5)
        assert back.path.is_file() and back.path.is_relative_to((tmp_path / "elsewhere").resolve())
    assert not entry.path.exists()


def test_inpainted_images_keep_their_input_and_mask_and_delete_them_with_the_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.masking import InpaintSpec
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult
    from heyim_desktop.store import HistoryStore

    source = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    mask_arr = np.zeros((64, 64), np.uint8)
    mask_arr[8:20, 8:20] = 255
    mask = Image.fromarray(mask_arr, mode="L")
    req = GenerationRequest(prompt="fix the hand", seed=3, width=64, height=64, init_image=source, strength=0.8,
                            inpaint=InpaintSpec(mask=mask, blur=2, fill="fill", only_masked=True, padding=16))
    result = GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64)), 3, 0),), "m", "torch-cpu", {})
    with HistoryStore.open(root=tmp_path / "h") as store:
        entry = store.save_result(result)[0]
        src_path, mask_path = entry.edit_files()
        assert src_path is not None and mask_path is not None
        assert np.array_equal(np.asarray(Image.open(mask_path).convert("L")), mask_arr)
        assert Image.open(src_path).size == (64, 64)
        assert entry.inpaint_settings() == {"blur": 2, "invert": False, "fill": "fill", "only_masked": True,
                                            "padding": 16, "keep_unmasked": True}
        again = store.get(entry.id)
        assert again is not None and again.edit_files() == (src_path, mask_path)
        store.delete([entry.id])
        assert not src_path.exists() and not mask_path.exists() and not entry.path.exists()


def test_controlnet_control_images_are_kept_with_the_entry_and_deleted_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult
    from heyim_desktop.store import HistoryStore

    edges = Image.fromarray(np.tile(np.arange(48, dtype=np.uint8)[None, :, None] * 5, (40, 1, 3)))
    scribble = Image.fromarray(np.full((24, 32, 3), 200, np.uint8))
    units = (ControlUnit(model="canny-net", image=edges, weight=0.6, preprocessor="canny"),
             ControlUnit(model="tile-net", image=None),  # uses the input image: nothing to keep
             ControlUnit(model="scribble-net", image=scribble, end=0.5))
    req = GenerationRequest(prompt="a fox", seed=5, width=64, height=64, count=2, controlnets=units,
                            init_image=Image.new("RGB", (64, 64), (9, 9, 9)), strength=0.7)
    images = tuple(GeneratedImage(Image.new("RGB", (64, 64), (s, 0, 0)), s, i) for i, s in enumerate((5, 6)))
    with HistoryStore.open(root=tmp_path / "h") as store:
        first, second = store.save_result(GenerationResult(req, images, "m", "torch-cpu", {}))
        for entry in (first, store.get(first.id)):
            assert entry is not None
            kept = entry.control_files()
            assert len(kept) == 3 and kept[1] is None and kept[0] is not None and kept[2] is not None
            assert kept[0].parent == entry.path.parent and kept[0].name.startswith(entry.path.stem)
            assert np.array_equal(np.asarray(Image.open(kept[0])), np.asarray(edges))
            assert Image.open(kept[2]).size == (32, 24)
            assert entry.edit_files() == (None, None) and entry.missing_control_files() == []
        assert entry.settings["controlnet"][0]["weight"] == 0.6
        second_files = second.control_files()
        assert second_files[0] is not None and second_files[0] != first.control_files()[0]
        # A kept file removed behind HeyIm's back is reported, not silently dropped.
        second_files[2].unlink()
        assert second.control_files()[2] is None and second.missing_control_files() == [2]
        store.delete([first.id])
        assert not any(p is not None and p.exists() for p in first.control_files()) and not first.path.exists()
        assert second.path.exists() and second_files[0].exists()


def test_recorded_edit_file_names_are_only_ever_beside_the_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.store.history import edit_file_paths

    image = tmp_path / "2026-12" / "fox-5.png"
    settings = {"edit_files": {"control0": "fox-5.control0-1.png", "control1": "../fox-5.control1.png",
                               "control2": "other.control2.png", "control3": "fox-5.mask.png",
                               "source": "fox-5.source.png", "mask": 7}}
    assert sorted(p.name for p in edit_file_paths(image, settings)) == ["fox-5.control0-1.png", "fox-5.source.png"]
    assert all(p.parent == image.parent for p in edit_file_paths(image, settings))


def test_a_control_image_that_cannot_be_written_leaves_none_behind(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.errors import StorageError
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult
    from heyim_desktop.store import HistoryStore, history

    units = tuple(ControlUnit(model="net", image=Image.new("RGB", (16, 16), (i, 0, 0))) for i in range(2))
    req = GenerationRequest(prompt="a fox", seed=5, width=64, height=64, controlnets=units)
    real = history.write_png_atomic
    calls = []

    def full_disk(image, path, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(path.name)
        if ".control1" in path.name:
            raise StorageError("The disk is full.")
        return real(image, path, *args, **kw)

    monkeypatch.setattr(history, "write_png_atomic", full_disk)
    with HistoryStore.open(root=tmp_path / "h") as store:
        with pytest.raises(StorageError, match="disk is full"):
            store.save_result(GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64)), 5, 0),), "m", "t", {}))
        assert any(".control0" in n for n in calls)
        assert not list((tmp_path / "h").rglob("*.control*.png"))


def test_moving_the_images_takes_the_files_kept_beside_them(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.masking import InpaintSpec
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult

    source = Image.fromarray(np.full((64, 64, 3), 90, np.uint8))
    mask_arr = np.zeros((64, 64), np.uint8)
    mask_arr[4:12, 4:12] = 255
    req = GenerationRequest(prompt="fix it", seed=5, width=64, height=64, init_image=source, strength=0.8,
                            inpaint=InpaintSpec(mask=Image.fromarray(mask_arr, mode="L")))
    result = GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64)), 5, 0),), "m", "torch-cpu", {})
    old, new = tmp_path / "old", tmp_path / "new"
    with HistoryStore.open(tmp_path / "history", images_dir=old) as store:
        entry = store.save_result(result)[0]
        before = entry.edit_files()
        assert all(p is not None for p in before)
        # The destination already has a file of that name (a user's): it is left alone, ours gets "-1".
        clash = new / entry.path.parent.name / entry.path.name
        clash.parent.mkdir(parents=True)
        clash.write_bytes(b"the user's own file")
        assert store.move_images(new).moved == 1
        moved = store.get(entry.id)
        assert moved is not None and moved.path.name == f"{entry.path.stem}-1.png"
        src_path, mask_path = moved.edit_files()
        assert src_path is not None and mask_path is not None
        assert src_path.parent == mask_path.parent == moved.path.parent
        assert np.array_equal(np.asarray(Image.open(mask_path).convert("L")), mask_arr)
        assert not any(p.exists() for p in before if p is not None)  # nothing left behind
        assert clash.read_bytes() == b"the user's own file"
        store.delete([entry.id])
        assert not src_path.exists() and not mask_path.exists() and not moved.path.exists()
    assert not list(old.rglob("*.png")) and clash.exists()
