"""Checking a model on disk without loading it: structure, headers and (for downloads) hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.gguf_header import read_gguf_header
from heyim_desktop.core.model_files import read_safetensors_header
from heyim_desktop.models.download import MANIFEST, RemoteFile, hash_ok
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.types import ModelInfo


def verify_model(info: ModelInfo, library: ModelLibrary, *, on_file: Callable[[str], None] | None = None) -> list[str]:
    """Problems found (empty: the model is sound). Re-reads every weight file's header, and
    re-hashes every file of a downloaded model against the hub's checksums."""
    if info.kind == "demo":
        return []
    current = library.refresh(info)
    problems = [] if current.ready else [current.summary]
    path = Path(info.ref)
    if path.is_file():
        return problems
    for weights in sorted(path.rglob("*.safetensors")):
        if on_file:
            on_file(str(weights.relative_to(path)))
        try:
            read_safetensors_header(weights)
        except ModelError as exc:
            problems.append(str(exc))
    for gguf in sorted(path.rglob("*.gguf")):  # a GGUF variant's transformer: its header, as the library reads it
        if on_file:
            on_file(str(gguf.relative_to(path)))
        try:
            read_gguf_header(gguf)
        except ModelError as exc:
            problems.append(str(exc))
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return problems + [f"{MANIFEST} is unreadable."]
        for entry in entries:
            remote = RemoteFile(entry["path"], int(entry["size"]), entry.get("sha256"), entry.get("git_sha1"))
            file = path / remote.path
            if on_file:
                on_file(remote.path)
            if not file.is_file():
                problems.append(f"{remote.path} is missing.")
            elif file.stat().st_size != remote.size or not hash_ok(file, remote):
                problems.append(f"{remote.path} does not match the hub's checksum (damaged or modified).")
    return problems
