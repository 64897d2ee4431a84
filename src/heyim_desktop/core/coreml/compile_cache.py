"""Compiled ``.mlmodelc`` copies of ``.mlpackage`` models, cached by content hash.

Compiling a large package takes a while; the result is kept in HeyIm's cache folder under a
key made from the package's bytes, so a later launch (or the same model in another folder)
loads at once, and an edited package is compiled again. Hashing a 1.6 GB UNet also takes a
moment, so the hash is remembered per (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

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
        index[str(package)] = {"stamp": stamp, "hash": digest}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{_INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index), encoding="utf-8")
        os.replace(tmp, self.root / _INDEX)
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
            work = Path(tempfile.mkdtemp(prefix=".compile-", dir=self.root))
            try:
                log.info("compiling %s (first use; cached for next time)", package.name)
                self._compile(package, work / dest.name)
                if not (work / dest.name).is_dir():
                    raise RuntimeError(f"compiling {package.name} produced no model")
                os.replace(work / dest.name, dest)  # appears whole or not at all
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return dest, True

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
