"""AUTOMATIC1111's short model hash, computed once per file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from heyim_desktop.core import hashes
from heyim_desktop.core.hashes import ModelHashes


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    original = hashes._file_sha256

    def counting(path: Path) -> str:
        reads.append(path)
        return original(path)

    monkeypatch.setattr(hashes, "_file_sha256", counting)
    return reads


def test_a_checkpoint_hashes_as_a1111_does(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights" * 100_000)
    full = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    hasher = ModelHashes()
    assert hasher.sha256(ckpt) == full and hasher.short(ckpt) == full[:10]


def test_cached_by_path_size_and_mtime_across_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _count_reads(monkeypatch)
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"a" * 1000)
    cache = tmp_path / "cache" / "hashes.json"
    first = ModelHashes(cache)
    assert first.cached_sha256(ckpt) is None
    value = first.sha256(ckpt)
    assert first.sha256(ckpt) == value and first.cached_sha256(ckpt) == value and len(reads) == 1
    assert ModelHashes(cache).sha256(ckpt) == value and len(reads) == 1  # read from the cache file
    ckpt.write_bytes(b"b" * 1000)
    os.utime(ckpt, ns=(1, 1))  # same size, other mtime: hashed again
    assert ModelHashes(cache).sha256(ckpt) != value and len(reads) == 2


def test_a_diffusers_folder_hashes_its_weights_not_its_configs(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    hasher = ModelHashes()
    original = hasher.sha256(tiny_model)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert hasher.sha256(copy) == original  # stable across copies and moves
    (copy / "unet" / "config.json").write_text((copy / "unet" / "config.json").read_text() + " ")
    assert hasher.sha256(copy) == original
    weights = next((copy / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert hasher.sha256(copy) != original
    assert hasher.cached_sha256(copy) == hasher.sha256(copy)


def test_a_broken_cache_file_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")
    ckpt = tmp_path / "m.bin"
    ckpt.write_bytes(b"x")
    assert ModelHashes(cache).short(ckpt) == hashlib.sha256(b"x").hexdigest()[:10]
    with pytest.raises(FileNotFoundError):
        ModelHashes(cache).sha256(tmp_path / "missing")


def test_two_callers_for_one_file_read_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"z" * 10_000)
    hasher = ModelHashes()
    started, go = threading.Event(), threading.Event()
    original = hashes._file_sha256
    reads: list[Path] = []

    def slow(path: Path) -> str:
        reads.append(path)
        started.set()
        assert go.wait(10)
        return original(path)

    monkeypatch.setattr(hashes, "_file_sha256", slow)
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(hasher.sha256(ckpt)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(hasher.sha256(ckpt)))
    second.start()
    go.set()
    first.join(10)
    second.join(10)
    assert len(reads) == 1 and len(set(results)) == 1 and len(results) == 2
