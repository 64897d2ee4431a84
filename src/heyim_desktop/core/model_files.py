"""Recognising model files by their content, never by their name (no torch).

A ``.safetensors`` file is 8 bytes of little-endian header length, a JSON header naming every
tensor's dtype, shape and byte range, then the raw bytes. Pickle-based checkpoints (``.ckpt``,
``.pt``, ``.bin``) are either a bare pickle (``0x80`` + protocol byte) or a zip holding one:
loading them can run arbitrary code, so HeyIm only ever reads their magic bytes here (old
protocol 0/1 pickles have no magic: their first opcodes are parsed, never executed).

Only regular files are opened (a FIFO named ``.safetensors`` would block a read forever): the
file is opened non-blocking and checked with ``fstat`` before a byte is read. A safetensors
header is checked as the format requires: every tensor's dtype x shape equals its byte
length, the byte ranges are sorted, contiguous, non-overlapping and cover the data exactly,
and ``__metadata__`` maps strings to strings.
"""

from __future__ import annotations

import enum
import io
import json
import math
import os
import pickletools
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

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


class NotARegularFile(CorruptModel):
    """A FIFO, socket, device or folder where a model file should be: never opened for reading."""


def _not_regular(path: Path, mode: int) -> NotARegularFile:
    what = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "not a regular file")
    return NotARegularFile(f"{path.name} is {what}, not a model file; HeyIm only reads regular files.")


def check_regular_file(path: Path) -> int:
    """The size of ``path`` if it is a regular file (links followed); else :class:`NotARegularFile`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st.st_size


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file, without ever blocking on a FIFO.

    The open is non-blocking and the check is on the opened descriptor, so a file swapped for
    a FIFO between a check and the open is refused too.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


#: Bytes per element of each safetensors dtype.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
#: Real checkpoints have headers of a few hundred KB; anything past this is a bogus length.
MAX_HEADER_BYTES = 100 * 1024 * 1024
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")


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


#: Opcodes an old (protocol 0 or 1) pickle may start with: MARK, GLOBAL, EMPTY_DICT/LIST/TUPLE, ...
_OLD_PICKLE_FIRST = frozenset(b"(c}])NILFSVXKJMGTUB")


def _old_pickle(head: bytes, last: bytes) -> bool:
    """Whether ``head`` parses as the opcodes of a protocol 0/1 pickle ending in STOP (not run)."""
    if not head or head[0] not in _OLD_PICKLE_FIRST or last != b".":
        return False
    count = 0
    try:
        for _opcode, _arg, _pos in pickletools.genops(io.BytesIO(head)):
            count += 1
            if count >= 4:
                return True
    except (ValueError, UnicodeDecodeError, OverflowError):
        pass  # cut off mid-opcode at the end of ``head``, or not a pickle at all
    return count >= 2 and len(head) < 4096  # a whole tiny pickle


def sniff(path: Path) -> FileKind:
    """What ``path`` holds, from its first bytes (a non-regular file: :class:`NotARegularFile`)."""
    with open_regular(path) as fh:
        head = fh.read(4096)
        last = head[-1:]
        if len(head) == 4096:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
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
    if head[:2] in (b"\x80\x00", b"\x80\x01") or _old_pickle(head, last):
        return FileKind.PICKLE
    return FileKind.UNKNOWN


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key[:80]!r} appears twice")
        out[key] = value
    return out


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
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if kind is FileKind.UNKNOWN and path.suffix.lower() != ".safetensors":
            # A .ckpt/.pt/.bin that is not a pickle either: calling it "not safetensors" would puzzle.
            raise CorruptModel(f"{name} is not a model checkpoint HeyIm can read ({size} bytes): it is neither a "
                               "pickle checkpoint nor safetensors, so it is damaged or not a model. "
                               "Download or copy it again.")
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise CorruptModel(f"{name} is not a safetensors file (only {size} bytes).")
        length = int.from_bytes(prefix, "little")
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise CorruptModel(f"{name} is corrupt: its header length ({length} bytes) does not fit the file ({size} bytes).")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CorruptModel(f"{name} is corrupt: its header is not valid JSON.") from None
    except ValueError as exc:
        raise CorruptModel(f"{name} is corrupt: its header is not valid ({exc}).") from None
    if not isinstance(header, dict):
        raise CorruptModel(f"{name} is corrupt: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptModel(f"{name} is corrupt: its __metadata__ is not an object.")
    bad_meta = next((k for k, v in metadata.items() if not isinstance(v, str)), None)
    if bad_meta is not None:
        raise CorruptModel(f"{name} is corrupt: __metadata__ value {bad_meta[:80]!r} is not a string.")
    tensors: dict[str, TensorInfo] = {}
    ranges: list[tuple[int, int, str]] = []
    for key, entry in header.items():
        tensors[key] = _check_entry(name, key, entry)
        begin, end = entry["data_offsets"]
        ranges.append((begin, end, key))
    data_bytes = size - 8 - length
    ranges.sort()
    position = 0
    for begin, end, key in ranges:
        if begin < position:
            raise CorruptModel(f"{name} is corrupt: tensor {key!r} overlaps another tensor's bytes.")
        if begin > position:
            raise CorruptModel(f"{name} is corrupt: there is a gap of {begin - position} bytes before tensor {key!r}.")
        position = end
    if position > data_bytes:
        raise CorruptModel(
            f"{name} is truncated: its tensors need {position} bytes of data but the file holds {data_bytes}. "
            "Download or copy it again."
        )
    if position < data_bytes:
        raise CorruptModel(f"{name} is corrupt: {data_bytes - position} bytes after the last tensor belong to none.")
    return SafetensorsHeader(tensors, dict(metadata), data_bytes)


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


def folder_weights(folder: Path, name: str = "diffusion_pytorch_model.safetensors") -> Path:
    """The safetensors weights of a diffusers model folder; ModelError naming any pickle found instead."""
    weights = folder / name
    if not weights.is_file():
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
        extra = f" ({', '.join(pickles)} holds a pickle, which HeyIm never loads)" if pickles else ""
        raise ModelError(f"{folder.name} has no {name}{extra}")
    return weights
