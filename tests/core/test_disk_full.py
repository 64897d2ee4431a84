"""A full disk (ENOSPC, EDQUOT, EROFS) is one DiskFull error naming the folder, for every writer; no partial file."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from heyim_desktop.core.errors import DiskFull, StorageError
from heyim_desktop.core.output import write_png_atomic
from heyim_desktop.core.storage import atomic_write_bytes, storage_error

FULL = (errno.ENOSPC, "No space left on device")


def _raises(err: tuple[int, str] = FULL) -> Callable[..., Any]:
    def fail(*args: object, **kwargs: object) -> Any:
        raise OSError(*err)
    return fail


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("code, reason, words", [
    (errno.ENOSPC, "full", "disk is full"),
    (errno.EDQUOT, "quota", "quota"),
    (errno.EROFS, "read-only", "read-only"),
])
def test_the_three_errors_are_one_kind_naming_the_folder(tmp_path: Path, code: int, reason: str, words: str) -> None:
    err = storage_error(OSError(code, os.strerror(code)), tmp_path, "the image")
    assert isinstance(err, DiskFull) and err.reason == reason and words in str(err) and str(tmp_path) in str(err)
    text_err = storage_error(RuntimeError(f"IoError(Os {{ code: {code}, kind: x }}) os error {code}"), tmp_path, "x")
    assert isinstance(text_err, DiskFull) and text_err.reason == reason


@pytest.mark.parametrize("where", ["write", "fsync", "link", "mkdir"])
def test_png_on_a_full_disk_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    out = tmp_path / "out"
    if where == "write":
        monkeypatch.setattr(Image.Image, "save", _raises())
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _raises())
    elif where == "link":
        monkeypatch.setattr(os, "link", _raises())
    else:
        out.mkdir()
        monkeypatch.setattr(Path, "mkdir", _raises())
    with pytest.raises(DiskFull, match=f"disk is full: cannot save the image in {out}"):
        write_png_atomic(Image.new("RGB", (8, 8)), out / "x.png", "p")
    monkeypatch.undo()
    assert _files(out) == []


def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "prefs.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", _raises())
    with pytest.raises(DiskFull):
        atomic_write_bytes(target, b"new", what="the preferences")
    assert target.read_text() == "old" and _files(tmp_path) == ["prefs.json"]


def test_preferences_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.store.preferences import Preferences, load_preferences, save_preferences

    save_preferences(Preferences(default_steps=12), tmp_path)
    monkeypatch.setattr(os, "fsync", _raises((errno.EDQUOT, "Disk quota exceeded")))
    with pytest.raises(DiskFull, match="quota.*" + str(tmp_path)):
        save_preferences(Preferences(default_steps=40), tmp_path)
    monkeypatch.undo()
    assert load_preferences(tmp_path).default_steps == 12 and _files(tmp_path) == ["preferences.json"]


def test_api_token_on_a_full_disk_leaves_no_file_and_the_next_start_works(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.api.security import resolve_token, token_file

    monkeypatch.delenv("HEYIM_API_TOKEN", raising=False)
    monkeypatch.setattr(os, "fsync", _raises())
    with pytest.raises(DiskFull, match="API token"):
        resolve_token(None, tmp_path)
    monkeypatch.undo()
    assert _files(tmp_path) == [], "a zero-byte or temp token file was left"
    token, where = resolve_token(None, tmp_path)
    assert len(token) >= 40 and where == str(token_file(tmp_path))
    assert resolve_token(None, tmp_path)[0] == token


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xff\xfe\x00garbage", b"two words"])
def test_a_damaged_token_file_is_replaced_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    from heyim_desktop.api.security import resolve_token, token_file

    monkeypatch.delenv("HEYIM_API_TOKEN", raising=False)
    token_file(tmp_path).write_bytes(content)
    with caplog.at_level(logging.INFO):
        token, _ = resolve_token(None, tmp_path)
    assert token and token_file(tmp_path).read_text().strip() == token
    assert "damaged" in caplog.text and "replaced" in caplog.text
    if os.name == "posix":
        assert token_file(tmp_path).stat().st_mode & 0o077 == 0


def test_thumbnails_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult
    from heyim_desktop.store import HistoryStore

    req = GenerationRequest(prompt="p", seed=1, width=64, height=64)
    with HistoryStore.open(tmp_path / "h") as store:
        entry = store.save_result(GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64)), 1, 0),),
                                                   "m", "e", {}))[0]
        monkeypatch.setattr(os, "replace", _raises())
        with pytest.raises(DiskFull, match="thumbnail"):
            store.thumbnail_path(entry.id, 32)
        assert _files(store.thumbs_dir) == []


@pytest.mark.slow
def test_demo_model_on_a_full_disk_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import AutoencoderKL

    from heyim_desktop.core.demo_model import build_demo_model

    def safetensors_full(self: object, *a: object, **k: object) -> None:
        # How safetensors reports ENOSPC: its own exception type, the OS error only as text.
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')

    monkeypatch.setattr(AutoencoderKL, "save_pretrained", safetensors_full)
    with pytest.raises(DiskFull, match=f"disk is full: cannot save the demo model in {tmp_path}"):
        build_demo_model(tmp_path / "demo")
    assert _files(tmp_path) == []


def test_demo_model_cli_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.core import demo_model

    monkeypatch.setattr(demo_model, "write_tokenizer", _raises())
    assert main(["demo-model", str(tmp_path / "demo")]) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "disk is full" in err and "Traceback" not in err
    assert _files(tmp_path) == []


def test_models_import_copy_on_a_full_disk(data_dir: Path, tiny_single_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main

    real_copy = shutil.copyfile

    def half_then_full(src: Any, dst: Any, *a: Any, **k: Any) -> Any:
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])  # someone else took the space mid-copy
        raise OSError(*FULL)

    monkeypatch.setattr(shutil, "copyfile", half_then_full)
    assert main(["models", "import", str(tiny_single_file)]) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "disk is full" in err and str(data_dir / "models") in err
    assert _files(data_dir / "models") == []
    monkeypatch.setattr(shutil, "copyfile", real_copy)


def test_models_import_folder_on_a_full_disk(data_dir: Path, tiny_model: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.models.importer import import_model

    calls = {"n": 0}
    real_copy = shutil.copyfile

    def full_on_third(src: Any, dst: Any, *a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(*FULL)
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", full_on_third)
    with pytest.raises(DiskFull, match="disk is full"):
        import_model(tiny_model)
    assert _files(data_dir / "models") == []


def test_a_conversion_that_ran_out_of_space_says_so(data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.models import importer

    src = tmp_path / "old.ckpt"
    src.write_bytes(b"\x80\x02}q\x00.")  # a pickle; the child process is faked below
    (data_dir / "models").mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "Traceback (most recent call last):\n...\nOSError: [Errno 28] No space left on device\n"))
    with pytest.raises(DiskFull, match="disk is full"):
        importer.convert_pickle(src, data_dir / "models")
    assert _files(data_dir / "models") == []


def test_collect_writes_map_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `batch collect` writes with write_png_atomic(overwrite=True): the same error, nothing left.
    monkeypatch.setattr(os, "fsync", _raises((errno.EROFS, "Read-only file system")))
    with pytest.raises(DiskFull, match="read-only") as info:
        write_png_atomic(Image.new("RGB", (8, 8)), tmp_path / "job.png", "p", overwrite=True)
    assert info.value.reason == "read-only" and _files(tmp_path) == []


def test_permission_denied_is_a_storage_error_but_not_disk_full(tmp_path: Path) -> None:
    err = storage_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path, "the image")
    assert isinstance(err, StorageError) and not isinstance(err, DiskFull) and "permission" in str(err).lower()


def test_a_temp_folder_removed_by_another_writer_mid_mkdir_is_made_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Two writers share one temp folder, and each removes it when it is empty again. Between
    # mkdir's "exists" error and its "is it a folder" check the other writer may remove it:
    # mkdir then raises FileExistsError for a folder that is gone. The write must retry.
    from heyim_desktop.core import storage

    real_mkdir = Path.mkdir
    raced = []

    def racing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "tmp" and not raced:
            raced.append(self)
            raise FileExistsError(17, "File exists")
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    fd, path = storage.new_temp_file(tmp_path / "tmp", ".png")
    os.close(fd)
    assert raced and path.parent == tmp_path / "tmp" and path.exists()
