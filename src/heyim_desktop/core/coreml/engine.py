"""``load_coreml_engine``: a Core ML resources folder as a :class:`PipelineEngine`."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
from heyim_desktop.core.coreml.compute_units import (
    AUTO,
    REDUCE_MEMORY_BELOW,
    ComputeUnitChooser,
    auto_candidates,
    chip_name,
    default_units,
    normalise,
    parse_units,
    physical_memory,
)
from heyim_desktop.core.coreml.detect import CoreMLModelInfo, detect_coreml_folder
from heyim_desktop.core.coreml.runtime import ModelFactory, StatusCallback
from heyim_desktop.core.engine import PipelineEngine
from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)

MACOS_ONLY = "Core ML models run only on macOS; on this machine use a diffusers-format model (PyTorch engine)."


def model_key(info: CoreMLModelInfo) -> str:
    """Identifies a model for remembered settings: its folder and its shape."""
    w, h = info.size
    return f"{info.folder.resolve()}|{info.attention}|{w}x{h}|b{info.batch}"


def resolve_compute_units(
    info: CoreMLModelInfo,
    compute_units: str | None,
    *,
    chooser: ComputeUnitChooser | None = None,
    cache: CompiledModelCache | None = None,
    factory: ModelFactory | None = None,
    on_status: StatusCallback | None = None,
    clock: Callable[[], float] = time.perf_counter,
    chip: str | None = None,
) -> str:
    """The model's default for this chip (:func:`default_units`), the user's choice, or for
    AUTO the remembered/measured faster one (only CPU_AND_GPU for original attention)."""
    units = normalise(compute_units) if compute_units else default_units(info.attention, chip_name() if chip is None else chip)
    if units != AUTO:
        return units
    candidates = auto_candidates(info.attention)
    if len(candidates) == 1:
        return candidates[0]
    chooser = chooser or ComputeUnitChooser()
    key = model_key(info)
    if chooser.remembered(key) is None and on_status is not None:
        on_status("Measuring the Neural Engine and the GPU for this model (first use only)...")
    from heyim_desktop.core.coreml.runtime import unet_step_timer

    return chooser.choose(key, unet_step_timer(info, cache=cache, factory=factory, clock=clock), candidates)


def load_coreml_engine(
    folder: str | os.PathLike[str],
    compute_units: str | None = None,
    *,
    predictor: object | None = None,
    factory: ModelFactory | None = None,
    cache: CompiledModelCache | None = None,
    chooser: ComputeUnitChooser | None = None,
    on_status: StatusCallback | None = None,
    name: str | None = None,
    chip: str | None = None,
    memory: int | None = None,
    macos: tuple[int, ...] | None = None,
) -> PipelineEngine:
    """Load a Core ML resources folder.

    ``compute_units``: None (the model's default for this chip: see ``compute_units.default_units``),
    "CPU_AND_NE", "ALL", "CPU_AND_GPU", "CPU_ONLY" or "AUTO", optionally followed by
    per-component choices and the memory mode: ``"AUTO;VAEDecoder=CPU_AND_GPU;reduce-memory"``
    (``compute_units.parse_units``). Reduce-memory is on by default with 8 GB or less.
    ``chip``, ``memory`` (bytes) and ``macos`` replace what this Mac reports (tests).
    ``predictor`` (``predict(name, inputs) -> outputs``) replaces Core ML entirely (tests);
    ``factory`` replaces only how one compiled model is opened.
    """
    from heyim_desktop.core.coreml.components import CoreMLComponents, Predictor

    info = detect_coreml_folder(Path(folder))
    release = None
    choice = parse_units(compute_units)
    chip = chip_name() if chip is None else chip
    units = choice.units or default_units(info.attention, chip)
    reduce = choice.reduce_memory
    if reduce is None:
        total = physical_memory() if memory is None else memory
        reduce = 0 < total <= REDUCE_MEMORY_BELOW
    if predictor is None:
        if factory is None and sys.platform != "darwin":
            raise ModelError(MACOS_ONLY)
        from heyim_desktop.core.coreml.runtime import CoreMLRuntime

        cache = cache or CompiledModelCache()
        units = resolve_compute_units(info, units, chooser=chooser, cache=cache, factory=factory, on_status=on_status, chip=chip)
        runtime = CoreMLRuntime(info, units, cache=cache, factory=factory, on_status=on_status,
                                component_units=dict(choice.components), reduce_memory=reduce, macos=macos)
        predictor, release = runtime.predict, runtime.close
    predict: Predictor = predictor  # type: ignore[assignment]
    components = CoreMLComponents(info, predict, release=release)
    log.info("Core ML model %s: %s, %dx%d, batch %d, %s%s", info.name, info.attention, *info.size, info.batch, units,
             ", reduce memory" if reduce else "")
    return PipelineEngine(components, name=f"coreml-{units.lower()}", model_name=name or info.name, default_size=info.size)
