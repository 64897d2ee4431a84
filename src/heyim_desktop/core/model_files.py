"""Recognising model files by their content, never by their name (no torch).

A ``.safetensors`` file is 8 bytes of little-endian header length, a JSON header naming every
tensor's dtype, shape and byte range, then the raw bytes. Pickle-based checkpoints (``.ckpt``,
``.pt``, ``.bin``) are either a bare pickle (``0x80`` + protocol byte) or a zip holding one:
loading them can run arbitrary code, so HeyIm only ever reads their magic bytes here.
"""

from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from heyim_desktop.core.errors import ModelError


class FileKind(enum.Enum):
    SAFETENSORS = "safetensors"
    PICKLE = "pickle"  # bare pickle or torch's zip container: never loaded in-process
    GGUF = "gguf"
    UNKNOWN = "unknown"


class CorruptModel(ModelError):
    """The file is damaged (truncated, bad header): it is never loaded."""


class UnsafeModel(ModelError):
    """The file holds a pickle, which can run code when loaded: it is never loaded in-process."""


#: Bytes per element of each safetensors dtype.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
#: Real checkpoints have headers of a few hundred KB; anything past this is a bogus length.
MAX_HEADER_BYTES = 100 * 1024 * 1024
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    data_bytes: int

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.tensors.get(name)
        return info.shape if info else None


def sniff(path: Path) -> FileKind:
    """What ``path`` holds, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04":
        return FileKind.PICKLE
    if head[:4] == b"GGUF":
        return FileKind.GGUF
    if len(head) >= 9:
        length = int.from_bytes(head[:8], "little")
        if 2 <= length <= MAX_HEADER_BYTES and head[8:9] == b"{":
            return FileKind.SAFETENSORS
        if head[8:9] == b"{":  # the shape of a safetensors file with an impossible length
            return FileKind.SAFETENSORS
    return FileKind.UNKNOWN


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and fully validate a safetensors header against the file's size.

    Raises :class:`UnsafeModel` for a pickle (whatever its name) and :class:`CorruptModel` for a
    bogus length, a truncated file or byte ranges that do not add up.
    """
    name = path.name
    kind = sniff(path)
    if kind is FileKind.PICKLE:
        raise UnsafeModel(
            f"{name} is a pickle checkpoint, not safetensors; pickles can run code when loaded, so HeyIm "
            "never opens them. Convert it with `heyim-desktop models import FILE --convert`."
        )
    size = path.stat().st_size
    if kind is FileKind.UNKNOWN and path.suffix.lower() != ".safetensors":
        # A .ckpt/.pt/.bin that is not a pickle either: calling it "not safetensors" would puzzle.
        raise CorruptModel(f"{name} is not a model checkpoint HeyIm can read ({size} bytes): it is neither a "
                           "pickle checkpoint nor safetensors, so it is damaged or not a model. "
                           "Download or copy it again.")
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise CorruptModel(f"{name} is not a safetensors file (only {size} bytes).")
        length = int.from_bytes(prefix, "little")
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise CorruptModel(f"{name} is corrupt: its header length ({length} bytes) does not fit the file ({size} bytes).")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptModel(f"{name} is corrupt: its header is not valid JSON.") from None
    if not isinstance(header, dict):
        raise CorruptModel(f"{name} is corrupt: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptModel(f"{name} is corrupt: its __metadata__ is not an object.")
    tensors: dict[str, TensorInfo] = {}
    end_max = 0
    for key, entry in header.items():
        tensors[key] = _check_entry(name, key, entry)
        end_max = max(end_max, int(entry["data_offsets"][1]))
    data_bytes = size - 8 - length
    if end_max > data_bytes:
        raise CorruptModel(
            f"{name} is truncated: its tensors need {end_max} bytes of data but the file holds {data_bytes}. "
            "Download or copy it again."
        )
    return SafetensorsHeader(tensors, {str(k): str(v) for k, v in metadata.items()}, data_bytes)


def _check_entry(name: str, key: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CorruptModel(f"{name} is corrupt: tensor {key!r} has no description.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CorruptModel(f"{name} is corrupt: tensor {key!r} has an invalid dtype or shape.")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise CorruptModel(f"{name} is corrupt: tensor {key!r} has invalid byte offsets.")
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != DTYPE_SIZES[dtype] * math.prod(shape):
        raise CorruptModel(f"{name} is corrupt: tensor {key!r} does not match its byte range.")
    return TensorInfo(dtype, tuple(shape))


def is_checkpoint_candidate(path: Path) -> bool:
    """Cheap filter for folder scans: files named like checkpoints (content decides the rest)."""
    return path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file() and not path.name.startswith(".")


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
