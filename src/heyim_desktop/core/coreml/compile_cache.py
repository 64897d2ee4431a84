"""Compiled ``.mlmodelc`` copies of ``.mlpackage`` models, cached by content hash.

Compiling a large package takes a while; the result is kept in HeyIm's cache folder under a
key made from the package's bytes, so a later launch (or the same model in another folder)
loads at once, and an edited package is compiled again. Hashing a 1.6 GB UNet also takes a
moment, so the hash is remembered per (path, size, mtime).

Safe across processes (the window's engine process and a `heyim generate` at once): compiling
one key holds an exclusive file lock (``.<key>.lock``, ``fcntl.flock``; released by the
system if the process dies), the compiled folder is built in a private temporary folder and
renamed into place whole, and a process that waited for the lock finds the result and does
not compile again. The hash index is written by atomic replace under its own lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: ``compile(package, destination)`` writes ``destination`` (an ``.mlmodelc`` folder).
CompileFn = Callable[[Path, Path], None]
_INDEX = "hashes.json"


def content_hash(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _stamp(folder: Path) -> list[list[object]]:
    return [[p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.rglob("*")) if p.is_file()]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on ``path`` (created if missing); a no-op lock
    where ``fcntl`` is missing (Windows, where Core ML never runs)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def coremltools_compile(package: Path, destination: Path) -> None:
    """Compile with Core ML (macOS only)."""
    from coremltools.models.utils import compile_model

    compile_model(str(package), str(destination))


class CompiledModelCache:
    def __init__(self, root: Path | None = None, compile_fn: CompileFn | None = None) -> None:
        if root is None:
            from heyim_desktop.core import paths

            root = paths.cache_dir() / "coreml-compiled"
        self.root = root
        self._compile = compile_fn or coremltools_compile
        self._lock = threading.Lock()

    def _index(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads((self.root / _INDEX).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def key(self, package: Path) -> str:
        """The package's content hash, reused while its files are unchanged."""
        package = package.resolve()
        stamp = _stamp(package)
        index = self._index()
        entry = index.get(str(package))
        if entry and entry.get("stamp") == stamp and isinstance(entry.get("hash"), str):
            return str(entry["hash"])
        digest = content_hash(package)
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / f".{_INDEX}.lock"):
            index = self._index()  # another process may have added entries meanwhile
            index[str(package)] = {"stamp": stamp, "hash": digest}
            tmp = self.root / f".{_INDEX}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                tmp.write_text(json.dumps(index), encoding="utf-8")
                os.replace(tmp, self.root / _INDEX)
            except OSError:  # the index is only a shortcut: without it the hash is computed again
                tmp.unlink(missing_ok=True)
                log.warning("could not update %s", self.root / _INDEX, exc_info=True)
        return digest

    def path_for(self, package: Path) -> Path:
        return self.root / f"{package.stem}-{self.key(package)[:24]}.mlmodelc"

    def compiled(self, package: Path) -> tuple[Path, bool]:
        """The compiled model for ``package`` and whether it was compiled just now."""
        with self._lock:
            dest = self.path_for(package)
            if dest.is_dir():
                return dest, False
            self.root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.root / f".{dest.name}.lock"):
                if dest.is_dir():  # another process compiled it while this one waited
                    return dest, False
                return self._compile_into(package, dest), True

    def _compile_into(self, package: Path, dest: Path) -> Path:
        work = Path(tempfile.mkdtemp(prefix=".compile-", dir=self.root))
        try:
            log.info("compiling %s (first use; cached for next time)", package.name)
            self._compile(package, work / dest.name)
            if not (work / dest.name).is_dir():
                raise RuntimeError(f"compiling {package.name} produced no model")
            os.replace(work / dest.name, dest)  # appears whole or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dest

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
