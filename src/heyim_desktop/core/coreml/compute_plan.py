"""Where Core ML places a compiled model's ops (its compute plan), and the Neural Engine check.

``read_placements`` asks Core ML (macOS 14.4+, coremltools 8+: ``MLComputePlan``) for each
ML-program op's preferred device and estimated cost share; ``summarise`` turns those into the
figures the macOS workflow checks: the share of the estimated cost placed on the Neural Engine,
and the costliest ops with their devices. The summary is plain arithmetic, tested anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

NEURAL_ENGINE, GPU, CPU = "NE", "GPU", "CPU"


@dataclass(frozen=True)
class Placement:
    op: str  # the operator, "conv", "einsum", ...
    device: str  # NE, GPU, CPU or "?" when Core ML gives none
    cost: float  # the estimated share of the whole model's work, 0..1


@dataclass(frozen=True)
class PlanSummary:
    ne_share: float  # of the estimated cost, the share placed on the Neural Engine
    top: tuple[Placement, ...]  # the costliest ops, costliest first
    by_device: dict[str, float]

    def describe(self) -> str:
        devices = ", ".join(f"{d} {w:.1%}" for d, w in sorted(self.by_device.items(), key=lambda kv: -kv[1]))
        tops = "; ".join(f"{p.op} on {p.device} ({p.cost:.1%})" for p in self.top)
        return f"estimated cost by device: {devices}\ncostliest ops: {tops}"


def summarise(placements: Sequence[Placement], top: int = 10) -> PlanSummary:
    total = sum(p.cost for p in placements) or 1.0
    by_device: dict[str, float] = {}
    for p in placements:
        by_device[p.device] = by_device.get(p.device, 0.0) + p.cost / total
    ranked = tuple(sorted(placements, key=lambda p: -p.cost)[:top])
    return PlanSummary(by_device.get(NEURAL_ENGINE, 0.0), ranked, by_device)


def check_neural_engine(summary: PlanSummary, min_share: float = 0.8, top: int = 5) -> list[str]:
    """Problems ([] when fine): too little of the cost on the Neural Engine, or one of the
    ``top`` costliest ops elsewhere."""
    problems = []
    if summary.ne_share < min_share:
        problems.append(f"only {summary.ne_share:.1%} of the estimated cost is on the Neural Engine (want {min_share:.0%})")
    for p in summary.top[:top]:
        if p.device != NEURAL_ENGINE:
            problems.append(f"a costly {p.op} ({p.cost:.1%}) is placed on the {p.device}")
    return problems


def _device_kind(device: Any) -> str:
    name = type(device).__name__
    if "NeuralEngine" in name:
        return NEURAL_ENGINE
    if "GPU" in name:
        return GPU
    return CPU if "CPU" in name else "?"


def _operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks or ():
            yield from _operations(inner)


def read_placements(compiled: Path, compute_units: str = "CPU_AND_NE") -> list[Placement]:
    """Each op of ``compiled`` (an ``.mlmodelc``) with its preferred device and cost (macOS only)."""
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    plan = MLComputePlan.load_from_path(path=str(compiled), compute_units=ct.ComputeUnit[compute_units])
    program = plan.model_structure.program
    if program is None:
        raise ValueError(f"{compiled.name} is not an ML program")
    out = []
    for op in _operations(program.functions["main"].block):
        if op.operator_name in ("const", "constexpr_lut_to_dense"):
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        cost = plan.get_estimated_cost_for_mlprogram_operation(op)
        device = _device_kind(usage.preferred_compute_device) if usage is not None else "?"
        out.append(Placement(op.operator_name, device, float(cost.weight) if cost is not None else 0.0))
    return out
