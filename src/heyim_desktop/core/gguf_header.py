"""Reading a GGUF file's header without torch or the ``gguf`` package: metadata and tensor names.

GGUF (llama.cpp's format, used for quantized diffusion transformers too) is plain data: a magic,
a version, key/value metadata and a table of tensor names, shapes and types. Nothing in it can run
code; this reader only parses that table, with limits on every count and length, so a hostile or
truncated file is a :class:`~heyim_desktop.core.model_files.CorruptModel`, never a hang or a crash.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from heyim_desktop.core.model_files import CorruptModel, open_regular

MAGIC = b"GGUF"
MAX_TENSORS = 1_000_000
MAX_KEYS = 100_000
MAX_STRING = 1 << 20
MAX_ARRAY = 10_000_000
MAX_DIMS = 8

#: ggml's tensor type numbers (ggml.h), as the model library names them.
TENSOR_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
    12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
# value types: fixed-size scalars (struct format), 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class GgufTensor:
    shape: tuple[int, ...]  # as stored (ggml order: fastest dimension first)
    type: str


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, object] = field(default_factory=dict)  # scalars and strings (arrays left out)
    tensors: dict[str, GgufTensor] = field(default_factory=dict)

    @property
    def quantization(self) -> str:
        """The file's main quantization ("Q8_0", "Q4_K"...): the commonest non-float type, else the float one."""
        counts = Counter(t.type for t in self.tensors.values())
        quantized = [(n, t) for t, n in counts.items() if t not in _FLOAT_TYPES]
        if quantized:
            return max(quantized)[1]
        return counts.most_common(1)[0][0] if counts else ""


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, name: str) -> None:
        self.fh, self.size, self.name = fh, size, name

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise CorruptModel(f"{self.name} is truncated (its GGUF header ends early).")
        return data

    def scalar(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def count(self, limit: int, what: str) -> int:
        value = int(self.scalar("<Q"))
        if value > limit:
            raise CorruptModel(f"{self.name} claims {value} {what}; a GGUF model has far fewer.")
        return value

    def string(self) -> str:
        n = self.count(MAX_STRING, "bytes in one string")
        return self.take(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if self.fh.tell() + n > self.size:
            raise CorruptModel(f"{self.name} is truncated (its GGUF header ends early).")
        self.fh.seek(n, 1)

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            item = int(self.scalar("<I"))
            n = self.count(MAX_ARRAY, "array items")
            if item in _SCALARS:
                self.skip(n * struct.calcsize(_SCALARS[item]))
            elif item == 8:
                for _ in range(n):
                    self.skip(self.count(MAX_STRING, "bytes in one string"))
            else:
                raise CorruptModel(f"{self.name} has a nested or unknown GGUF array type {item}.")
            return None  # arrays (tokenizer vocabularies) are not needed to recognise a model
        raise CorruptModel(f"{self.name} has an unknown GGUF value type {kind}.")


def read_gguf_header(path: Path) -> GgufHeader:
    """The metadata and tensor table of a GGUF file (only the header is read)."""
    try:
        with open_regular(path) as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(0)
            r = _Reader(fh, size, path.name)
            if r.take(4) != MAGIC:
                raise CorruptModel(f"{path.name} is not a GGUF file.")
            version = int(r.scalar("<I"))
            if version not in (2, 3):
                raise CorruptModel(f"{path.name} is GGUF version {version}; HeyIm reads versions 2 and 3.")
            n_tensors = r.count(MAX_TENSORS, "tensors")
            n_keys = r.count(MAX_KEYS, "metadata keys")
            metadata: dict[str, object] = {}
            for _ in range(n_keys):
                key = r.string()
                value = r.value(int(r.scalar("<I")))
                if value is not None:
                    metadata[key] = value
            tensors: dict[str, GgufTensor] = {}
            for _ in range(n_tensors):
                name = r.string()
                dims = int(r.scalar("<I"))
                if dims > MAX_DIMS:
                    raise CorruptModel(f"{path.name}: tensor {name[:80]!r} has {dims} dimensions.")
                shape = tuple(int(r.scalar("<Q")) for _ in range(dims))
                kind = int(r.scalar("<I"))
                r.scalar("<Q")  # offset into the data section
                tensors[name] = GgufTensor(shape, TENSOR_TYPES.get(kind, f"type {kind}"))
    except OSError as exc:
        raise CorruptModel(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    return GgufHeader(version, metadata, tensors)
