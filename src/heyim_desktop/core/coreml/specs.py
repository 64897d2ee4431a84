"""Reading a Core ML model's inputs and outputs without coremltools or macOS.

``.mlmodelc`` (compiled) folders carry ``metadata.json``; ``.mlpackage`` folders carry the
protobuf spec (``model.mlmodel``). coremltools can parse the spec, but importing it imports
torch and takes seconds, and the model library lists models with neither; the few fields we
need are read straight from the protobuf wire format here (Core ML's ``Model.proto``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from heyim_desktop.core.errors import ModelError

# ArrayFeatureType.ArrayDataType values in Core ML's FeatureTypes.proto.
_ARRAY_TYPES = {65552: "float16", 65568: "float32", 65600: "float64", 131104: "int32", 131080: "int8"}
_METADATA_TYPES = {"float16": "float16", "float32": "float32", "double": "float64", "float64": "float64", "int32": "int32", "int8": "int8"}
#: Cap on a spec file we read whole: real SD specs are a few MB (weights live elsewhere).
_MAX_SPEC_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, static shape and element type (numpy's name)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {self.shape}"


@dataclass(frozen=True)
class ModelSpec:
    """What a Core ML model expects and returns, read from its files."""

    name: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    has_einsum: bool
    user_metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def compiled(self) -> bool:
        return self.path.suffix == ".mlmodelc"

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def meta(self, key: str) -> str | None:
        return dict(self.user_metadata).get(key)


# -- protobuf wire format -----------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field; length-delimited values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _first(buf: bytes, number: int) -> Any:
    return next((v for n, _, v in _fields(buf) if n == number), None)


def _feature(buf: bytes) -> TensorSpec:
    name = ""
    shape: list[int] = []
    dtype = "unknown"
    for number, _, value in _fields(buf):
        if number == 1:
            name = value.decode("utf-8")
        elif number == 3:
            array = _first(value, 5)  # FeatureType.multiArrayType
            if array is None:
                dtype = "image" if _first(value, 4) is not None else "other"
                continue
            for n, wire, v in _fields(array):
                if n == 1 and wire == 2:  # packed repeated int64
                    p = 0
                    while p < len(v):
                        dim, p = _varint(v, p)
                        shape.append(dim)
                elif n == 1:
                    shape.append(v)
                elif n == 2:
                    dtype = _ARRAY_TYPES.get(v, f"type{v}")
    return TensorSpec(name, tuple(shape), dtype)


def parse_spec(data: bytes) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """Inputs, outputs and user-defined metadata from a serialized ``Model`` message."""
    description = _first(data, 2) or b""
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    meta: dict[str, str] = {}
    for number, _, value in _fields(description):
        if number == 1:
            inputs.append(_feature(value))
        elif number == 10:
            outputs.append(_feature(value))
        elif number == 100:
            for n, _, entry in _fields(value):
                if n == 100:  # map<string, string> userDefined
                    key = _first(entry, 1) or b""
                    val = _first(entry, 2) or b""
                    meta[key.decode("utf-8")] = val.decode("utf-8")
    return inputs, outputs, meta


# -- files ----------------------------------------------------------------------------


def _package_spec_path(package: Path) -> Path:
    manifest = package / "Manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            entry = data["itemInfoEntries"][data["rootModelIdentifier"]]
            candidate = package / "Data" / str(entry["path"])
            if candidate.is_file():
                return candidate
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return package / "Data" / "com.apple.CoreML" / "model.mlmodel"


def _read_package(name: str, package: Path) -> ModelSpec:
    spec_path = _package_spec_path(package)
    if not spec_path.is_file():
        raise ModelError(f"{package.name} is incomplete: its model spec (Data/com.apple.CoreML/model.mlmodel) is missing.")
    if spec_path.stat().st_size > _MAX_SPEC_BYTES:
        raise ModelError(f"{package.name}: the model spec is unexpectedly large; the package looks damaged.")
    data = spec_path.read_bytes()
    try:
        inputs, outputs, meta = parse_spec(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{package.name}: the model spec is unreadable ({exc}).") from None
    # An ML program stores op types as strings; split_einsum attention shows up as einsum ops.
    return ModelSpec(name, package, tuple(inputs), tuple(outputs), b"einsum" in data, tuple(sorted(meta.items())))


def _parse_shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    return tuple(int(v) for v in re.findall(r"\d+", str(value)))


def _schema(entries: Any) -> tuple[TensorSpec, ...]:
    out = []
    for e in entries or []:
        dtype = _METADATA_TYPES.get(str(e.get("dataType", "")).lower(), str(e.get("dataType", "unknown")).lower())
        out.append(TensorSpec(str(e.get("name", "")), _parse_shape(e.get("shape", "")), dtype))
    return tuple(out)


def _read_compiled(name: str, folder: Path) -> ModelSpec:
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise ModelError(f"{folder.name} is incomplete: metadata.json is missing.")
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder.name}: metadata.json is unreadable ({exc}).") from None
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict):
        raise ModelError(f"{folder.name}: metadata.json has no model description.")
    ops = entry.get("mlProgramOperationTypeHistogram") or {}
    has_einsum = any("einsum" in str(op).lower() for op in ops)
    mil = folder / "model.mil"
    if not ops and mil.is_file():
        has_einsum = "einsum" in mil.read_text(encoding="utf-8", errors="replace")
    user = entry.get("userDefinedMetadata") or {}
    return ModelSpec(
        name,
        folder,
        _schema(entry.get("inputSchema")),
        _schema(entry.get("outputSchema")),
        has_einsum,
        tuple(sorted((str(k), str(v)) for k, v in user.items())),
    )


def read_model_spec(name: str, path: Path) -> ModelSpec:
    """The spec of ``path`` (an ``.mlmodelc`` or ``.mlpackage`` folder)."""
    if not path.is_dir():
        raise ModelError(f"{path.name} is not a Core ML model folder.")
    if path.suffix == ".mlmodelc":
        return _read_compiled(name, path)
    return _read_package(name, path)
