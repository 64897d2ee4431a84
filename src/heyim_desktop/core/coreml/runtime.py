"""Loaded Core ML models predicting by name (coremltools on macOS).

``.mlmodelc`` folders load through ``CompiledMLModel`` as they are (no recompiling);
``.mlpackage`` files are compiled once into the cache (``compile_cache``). The model factory
is injectable, so the loading logic runs in tests anywhere; only the default factory needs macOS.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
from heyim_desktop.core.coreml.detect import KIND_SDXL, CoreMLModelInfo
from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)

#: ``factory(compiled_path, compute_units) -> model`` with ``model.predict(dict) -> dict``;
#: called with ``hints=...`` (coremltools' optimization hints) only when there are some.
ModelFactory = Callable[..., Any]
StatusCallback = Callable[[str], None]
#: Loaded on first use only: most generations never need them.
LAZY_MODELS = ("VAEEncoder",)
FIRST_LOAD_NOTE = (
    "The first load of a model on the Neural Engine can take a few minutes while macOS prepares it; "
    "later loads take seconds."
)
_UNIT_WORDS = {"CPU_AND_NE": "the Neural Engine", "ALL": "all compute units", "CPU_AND_GPU": "the GPU", "CPU_ONLY": "the CPU"}


def coremltools_factory(path: Path, compute_units: str, hints: Mapping[str, str] | None = None) -> Any:
    import coremltools as ct

    options: dict[str, Any] = {}
    if hints and hints.get("specializationStrategy") == "FastPrediction":
        options["optimization_hints"] = {"specializationStrategy": ct.SpecializationStrategy.FastPrediction}
    return ct.models.CompiledMLModel(str(path), compute_units=ct.ComputeUnit[compute_units], **options)


def macos_version() -> tuple[int, ...]:
    """(15, 1) on macOS 15.1; () elsewhere."""
    import platform
    import sys

    if sys.platform != "darwin":
        return ()
    return tuple(int(p) for p in platform.mac_ver()[0].split(".") if p.isdigit())


def stage_of(name: str) -> str:
    """Which step of a generation uses a model: "text", "unet" or "vae"."""
    if name.startswith("TextEncoder"):
        return "text"
    return "vae" if name.startswith("VAE") else "unet"


class CoreMLRuntime:
    def __init__(
        self,
        info: CoreMLModelInfo,
        compute_units: str,
        *,
        cache: CompiledModelCache | None = None,
        factory: ModelFactory | None = None,
        on_status: StatusCallback | None = None,
        names: tuple[str, ...] | None = None,
        component_units: Mapping[str, str] | None = None,
        reduce_memory: bool = False,
        macos: tuple[int, ...] | None = None,
    ) -> None:
        """``component_units``: per-model compute units over ``compute_units`` (say, the VAE on
        the GPU). ``reduce_memory``: only the models of the step running stay loaded (text
        encoders released before the UNet runs, the UNet before the VAE decodes), as Apple's
        pipeline offers for 8 GB Macs; models are compiled up front and opened on use.
        ``macos``: the system version (tests); the UNet gets the FastPrediction hint from 15."""
        self.info = info
        self.compute_units = compute_units
        self.component_units = dict(component_units or {})
        self.reduce_memory = reduce_memory
        self.macos = macos_version() if macos is None else macos
        self.cache = cache or CompiledModelCache()
        self._factory = factory or coremltools_factory
        self._status = on_status
        self.models: dict[str, Any] = {}
        self.load_seconds: dict[str, float] = {}
        wanted = names or (*info.unet_names, *info.text_encoder_names, "VAEDecoder")
        for name in wanted:
            if reduce_memory:
                self.prepare(name)
            else:
                self.load(name)

    def _say(self, text: str) -> None:
        log.info(text)
        if self._status is not None:
            self._status(text)

    def prepare(self, name: str) -> Path:
        """The compiled model of ``name`` (compiled into the cache on first use)."""
        spec = self.info.model(name)
        path = spec.path
        if not spec.compiled:
            if not self.cache.path_for(path).is_dir():
                self._say(f"Compiling {path.name} for this Mac (first use only)...")
            path, _ = self.cache.compiled(path)
        return path

    def hints_for(self, name: str) -> dict[str, str]:
        """coremltools' optimization hints: FastPrediction for the UNet on macOS 15 and later
        (Core ML specializes it for repeated predictions); nothing on older systems."""
        if stage_of(name) == "unet" and self.macos >= (15,):
            return {"specializationStrategy": "FastPrediction"}
        return {}

    def load(self, name: str) -> Any:
        if name in self.models:
            return self.models[name]
        t0 = time.perf_counter()
        path = self.prepare(name)
        units = self.units_for(name)
        where = _UNIT_WORDS.get(units, units)
        self._say(f"Loading {name} on {where}...")
        hints = self.hints_for(name)
        try:
            model = self._factory(path, units, hints=hints) if hints else self._factory(path, units)
        except Exception as exc:
            raise ModelError(f"{self.info.model(name).path.name} could not be loaded by Core ML ({exc}).") from exc
        self.models[name] = model
        self.load_seconds[name] = time.perf_counter() - t0
        return model

    def units_for(self, name: str) -> str:
        """The compute units of one model: SDXL's VAE runs on the GPU in fp32 whatever the UNet uses
        (in fp16 it overflows, and the Neural Engine computes in fp16), as in Apple's pipeline;
        a per-component choice wins over both."""
        chosen = self.component_units.get("ControlNet" if name.startswith("controlnet/") else name)
        if chosen:
            return chosen
        if self.info.kind == KIND_SDXL and name.startswith("VAE") and self.compute_units != "CPU_ONLY":
            return "CPU_AND_GPU"
        return self.compute_units

    def release(self, name: str) -> None:
        if self.models.pop(name, None) is not None:
            log.debug("released %s", name)

    def predict(self, name: str, inputs: Mapping[str, NDArray[Any]]) -> Mapping[str, NDArray[Any]]:
        if self.reduce_memory:
            stage = stage_of(name)
            for other in [n for n in self.models if stage_of(n) != stage]:
                self.release(other)
        model = self.models.get(name) or self.load(name)
        return model.predict(dict(inputs))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.models.clear()


def zero_inputs(info: CoreMLModelInfo, name: str) -> dict[str, NDArray[Any]]:
    spec = info.model(name)
    return {t.name: np.zeros(t.shape, dtype=np.dtype(t.dtype)) for t in spec.inputs}


def unet_step_timer(
    info: CoreMLModelInfo,
    *,
    cache: CompiledModelCache | None = None,
    factory: ModelFactory | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[[str], float]:
    """``time_step(units)``: load the UNet on ``units``, warm it up, time one step."""

    def time_step(units: str) -> float:
        rt = CoreMLRuntime(info, units, cache=cache, factory=factory, names=info.unet_names)
        try:
            values: dict[str, NDArray[Any]] = zero_inputs(info, info.unet_names[0])
            for _ in range(2):  # the first call pays for warm-up
                t0 = clock()
                for name in info.unet_names:
                    spec = info.model(name)
                    feed = {t.name: values.get(t.name, np.zeros(t.shape, dtype=np.dtype(t.dtype))) for t in spec.inputs}
                    values.update(rt.predict(name, feed))
                seconds = clock() - t0
            return seconds
        finally:
            rt.close()

    return time_step
