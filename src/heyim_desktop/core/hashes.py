"""Model hashes as AUTOMATIC1111 shows them: the first 10 hex digits of the file's SHA-256.

A single-file checkpoint hashes as AUTOMATIC1111 hashes it (the whole file's SHA-256), so a
``Model hash:`` written by HeyIm matches the one AUTOMATIC1111 shows for the same file. A
diffusers folder has no single file; its hash is the SHA-256 of a manifest listing every
weight file (``*.safetensors``, ``*.bin``) under the folder, one ``relative/path<TAB>sha256``
line each in sorted order. It stays the same when the folder is copied or moved and changes
when any weight changes; config files do not take part.

Hashing reads the whole file (seconds for a 2 GB checkpoint), so it runs once per file and is
cached by path, size and modification time, in memory and in a small JSON file. Call it off
the UI thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SHORT_LENGTH = 10
_CHUNK = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_CACHE_NAME = "model-hashes.json"


def short_hash(sha256: str) -> str:
    """AUTOMATIC1111's short hash of a full SHA-256 hex digest."""
    return sha256[:SHORT_LENGTH]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


class ModelHashes:
    """Thread-safe SHA-256 of model files and folders, cached by (path, size, mtime)."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self._cache_file = cache_file
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[int, int, str]] = {}
        self._loaded = False
        self._file_locks: dict[str, threading.Lock] = {}  # one reader per file; others wait for it

    # -- the cache -------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._cache_file is None or not self._cache_file.is_file():
            return
        try:
            data = json.loads(self._cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable model hash cache %s: %s", self._cache_file, exc)
            return
        if isinstance(data, dict):
            for key, value in data.items():
                if (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value[:2])
                        and isinstance(value[2], str)):
                    self._memo[key] = (value[0], value[1], value[2])

    def _save(self) -> None:
        if self._cache_file is None:
            return
        folder = self._cache_file.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({k: list(v) for k, v in self._memo.items()}, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._cache_file)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:  # a cache: losing it costs a re-hash, nothing else
            log.warning("could not save the model hash cache %s: %s", self._cache_file, exc)

    def _cached_file_sha256(self, path: Path) -> str:
        key = str(path.resolve())
        with self._lock:
            file_lock = self._file_locks.setdefault(key, threading.Lock())
        with file_lock:  # a second caller for the same file waits and then finds it cached
            stat = path.stat()
            with self._lock:
                self._load()
                hit = self._memo.get(key)
                if hit is not None and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
                    return hit[2]
            log.info("hashing %s (%.1f MB)", path, stat.st_size / 1e6)
            value = _file_sha256(path)
            with self._lock:
                self._memo[key] = (stat.st_size, stat.st_mtime_ns, value)
                self._save()
            return value

    # -- public --------------------------------------------------------------------------------
    def sha256(self, path: str | Path) -> str:
        """The full SHA-256 hex digest of a checkpoint file or a diffusers folder (see the module)."""
        target = Path(path).expanduser()
        if target.is_file():
            return self._cached_file_sha256(target)
        if target.is_dir():
            lines = [f"{p.relative_to(target).as_posix()}\t{self._cached_file_sha256(p)}\n" for p in _weight_files(target)]
            return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
        raise FileNotFoundError(f"no model at {target}")

    def short(self, path: str | Path) -> str:
        return short_hash(self.sha256(path))

    def cached_sha256(self, path: str | Path) -> str | None:
        """The SHA-256 if it is known without reading the weights, else None (never blocks long)."""
        target = Path(path).expanduser()
        try:
            if target.is_file():
                stat = target.stat()
                with self._lock:
                    self._load()
                    hit = self._memo.get(str(target.resolve()))
                return hit[2] if hit is not None and hit[:2] == (stat.st_size, stat.st_mtime_ns) else None
            if target.is_dir():
                parts = []
                for p in _weight_files(target):
                    known = self.cached_sha256(p)
                    if known is None:
                        return None
                    parts.append(f"{p.relative_to(target).as_posix()}\t{known}\n")
                return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()
        except OSError:
            return None
        return None


_shared: ModelHashes | None = None
_shared_lock = threading.Lock()


def shared_hashes() -> ModelHashes:
    """The process-wide hasher, caching in HeyIm's cache folder."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from heyim_desktop.core.paths import cache_dir

            _shared = ModelHashes(cache_dir() / _CACHE_NAME)
        return _shared
