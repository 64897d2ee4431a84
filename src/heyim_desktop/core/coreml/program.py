"""Shape figures of a converted ML program: op counts, rank-3 tensors, the largest intermediate.

Used by the converter's tests and by ``bench/coreml_program_shape.py`` to check that a
conversion has the Neural Engine's layout. Works on the MIL program coremltools keeps on the
model it returns from ``ct.convert`` (no macOS needed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

_BYTES = {"fp16": 2, "fp32": 4, "int32": 4, "int8": 1, "uint8": 1, "bool": 1, "int16": 2}


@dataclass(frozen=True)
class ProgramFigures:
    ops: dict[str, int]
    #: Distinct rank-3 tensors produced by non-constant ops.
    rank3: int
    #: The largest tensor an op produces: (op type, shape, bytes).
    largest: tuple[str, tuple[int, ...], int]
    output_dtypes: dict[str, str] = field(default_factory=dict)
    #: How many op outputs have each element type (fp16 compute shows as nearly all "fp16").
    tensor_dtypes: dict[str, int] = field(default_factory=dict)

    def count(self, op: str) -> int:
        return self.ops.get(op, 0)

    def describe(self) -> str:
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items(), key=lambda kv: (-kv[1], kv[0]))[:8])
        op, shape, size = self.largest
        return (
            f"{sum(self.ops.values())} ops ({top}); linear {self.count('linear')}, einsum {self.count('einsum')}, "
            f"transpose {self.count('transpose')}, rank-3 tensors {self.rank3}; largest intermediate {shape} "
            f"from {op} ({size / 2**20:.1f} MiB)"
        )


def _operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", ()):
            yield from _operations(inner)


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return str(types.builtin_to_string(var.dtype)) if var.dtype is not None else "?"


def program_figures(model: Any) -> ProgramFigures:
    """Figures of the ``main`` function of ``model`` (a coremltools MLModel from ``ct.convert``)."""
    program = getattr(model, "_mil_program", None)
    if program is None:
        raise ValueError("the model carries no MIL program (convert it in this process to read its figures)")
    main = program.functions["main"]
    ops: Counter[str] = Counter()
    rank3: set[str] = set()
    largest: tuple[str, tuple[int, ...], int] = ("", (), 0)
    for op in _operations(main):
        if op.op_type == "const":
            continue
        ops[op.op_type] += 1
        for var in op.outputs:
            shape = tuple(int(d) for d in var.shape) if all(isinstance(d, int) for d in var.shape) else ()
            if len(var.shape) == 3:
                rank3.add(var.name)
            n = 1
            for d in shape:
                n *= d
            size = n * _BYTES.get(_dtype_name(var), 4)
            if size > largest[2]:
                largest = (op.op_type, shape, size)
    outputs = {v.name: _dtype_name(v) for v in main.outputs}
    return ProgramFigures(dict(ops), len(rank3), largest, outputs)


_PROTO_BYTES = {"FLOAT16": 2, "FLOAT32": 4, "INT32": 4, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT16": 2}


def _proto_operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _proto_operations(inner)


def package_figures(package: str | Any) -> ProgramFigures:
    """The same figures from a saved ``.mlpackage`` (its ML program spec, read with coremltools)."""
    from coremltools.models.utils import load_spec
    from coremltools.proto import MIL_pb2

    spec = load_spec(str(package))
    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    names = MIL_pb2.DataType.Name
    ops: Counter[str] = Counter()
    rank3 = 0
    dtypes: Counter[str] = Counter()
    largest: tuple[str, tuple[int, ...], int] = ("", (), 0)
    for op in _proto_operations(block):
        if op.type == "const":
            continue
        ops[op.type] += 1
        for out in op.outputs:
            tensor = out.type.tensorType
            dims = tuple(int(d.constant.size) for d in tensor.dimensions)
            if tensor.rank == 3:
                rank3 += 1
            dtypes[names(tensor.dataType).lower().replace("float", "fp")] += 1
            n = 1
            for d in dims:
                n *= d
            size = n * _PROTO_BYTES.get(names(tensor.dataType), 4)
            if size > largest[2]:
                largest = (op.type, dims, size)
    kinds = {65552: "fp16", 65568: "fp32", 131104: "int32"}
    outputs = {o.name: kinds.get(o.type.multiArrayType.dataType, "?") for o in spec.description.output}
    return ProgramFigures(dict(ops), rank3, largest, outputs, dict(dtypes))
