"""Engines: a model loaded on a device, turning requests into results.

An engine is its :class:`Components` plus the shared loop; this module holds what every
engine does the same way (seed resolution, out-of-memory mapping, Pillow conversion).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.conditioning import TokenCount
from heyim_desktop.core.errors import ModelError, OutOfMemory
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, ProgressCallback

if TYPE_CHECKING:
    # numpy and Pillow load with the first result, not when the app starts (launch time).
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from heyim_desktop.core.components import Components

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    """What the window, the API and the CLI know of a loaded model: plain data, no tensors."""

    name: str
    model_name: str
    default_size: tuple[int, int]
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: AUTOMATIC1111's short model hash when known (first 10 hex digits of the SHA-256).
    model_hash: str | None = None
    #: How the model saves memory, in words ("" when every part stays loaded): the window shows it.
    memory: str = ""

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self.capabilities.fixed_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_name": self.model_name,
            "default_size": list(self.default_size),
            "capabilities": self.capabilities.to_dict(),
            "model_hash": self.model_hash,
            "memory": self.memory,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineInfo":
        return cls(
            name=str(data["name"]),
            model_name=str(data["model_name"]),
            default_size=(int(data["default_size"][0]), int(data["default_size"][1])),
            capabilities=Capabilities.from_dict(dict(data.get("capabilities") or {})),
            model_hash=data.get("model_hash"),
            memory=str(data.get("memory") or ""),
        )


class Engine(Protocol):
    name: str
    model_name: str

    @property
    def info(self) -> EngineInfo: ...

    def count_tokens(self, text: str) -> TokenCount: ...

    @property
    def default_size(self) -> tuple[int, int]: ...

    @property
    def fixed_size(self) -> tuple[int, int] | None: ...

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult: ...

    def close(self) -> None: ...


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "cannot allocate memory" in text


class NonFiniteImage(ModelError):
    """The model produced NaN or infinite pixels: its weights are damaged, or fp16 overflowed."""


def check_finite(images: npt.NDArray[np.float32], device: str, model_name: str) -> None:
    """Refuse decoded images holding NaN or infinity (they would be written as black PNGs)."""
    import numpy as np

    flat = np.isfinite(images).reshape(len(images), -1)
    finite = [bool(flat[i].all()) for i in range(len(flat))]
    if all(finite):
        return
    bad = [str(i + 1) for i, ok in enumerate(finite) if not ok]
    hint = (" On a GPU in fp16 this can be an overflow: run with --precision fp32."
            if device not in ("cpu", "") else "")
    raise NonFiniteImage(
        f"{model_name} produced invalid pixels (NaN or infinity) for image {', '.join(bad)} of {len(images)}: "
        f"its weights are probably damaged (or hold NaN values). Nothing was saved.{hint}"
    )


def floats_to_pil(images: npt.NDArray[np.float32]) -> list[Image.Image]:
    """(N, H, W, 3) floats in [0, 1] -> Pillow images (rounded like diffusers)."""
    import numpy as np
    from PIL import Image

    arr = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(a, mode="RGB") for a in arr]


class PipelineEngine:
    """The shared engine: components from any backend, driven by :func:`run_loop`."""

    def __init__(
        self, components: "Components", *, name: str, model_name: str, default_size: tuple[int, int],
        model_hash: str | None = None,
    ) -> None:
        self.components: Components | None = components
        self.name = name
        self.model_name = model_name
        self.model_hash = model_hash
        self._default_size = default_size
        self._capabilities = components.capabilities

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model_name, self.default_size, self._capabilities, self.model_hash)

    def count_tokens(self, text: str) -> TokenCount:
        if self.components is None:
            raise RuntimeError("engine is closed")
        return self.components.count_tokens(text)

    @property
    def default_size(self) -> tuple[int, int]:
        return self.fixed_size or self._default_size

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self._capabilities.fixed_size

    @property
    def supports_img2img(self) -> bool:
        return self._capabilities.img2img

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        refiner: "PipelineEngine | None" = None,
    ) -> GenerationResult:
        """Run ``request``; with ``refiner`` (the engine of ``request.refiner``) as a two-stage job."""
        from heyim_desktop.core.loop import run_loop

        if self.components is None:
            raise RuntimeError("engine is closed")
        from heyim_desktop.core.inpaint import plan_edit

        request = request.with_seed()
        plan = plan_edit(request)
        try:
            loop_request = self.components.prepare_networks(plan.request)
            out: Any
            if loop_request.hires is not None:  # a multi-stage job: core/pipeline.py
                from heyim_desktop.core.pipeline import run_hires

                if refiner is not None or request.refiner:
                    raise ModelError("Hires fix and an SDXL refiner in one job are not supported yet; choose one.")
                out = run_hires(self.components, loop_request, progress=progress, cancel=cancel)
            elif refiner is not None:
                from heyim_desktop.core.refine import run_refined

                if refiner.components is None:
                    raise RuntimeError("refiner engine is closed")
                # LoRAs and embeddings act on the base model; the refiner reads the cleaned prompt.
                out = run_refined(self.components, refiner.components, loop_request, progress=progress, cancel=cancel)
            else:
                if request.refiner:
                    raise ModelError(f"The refiner {request.refiner} is not loaded; the job needs it.")
                out = run_loop(self.components, loop_request, progress=progress, cancel=cancel)
        except Exception as exc:
            if _is_oom(exc):
                gc.collect()
                _empty_device_cache()
                raise OutOfMemory(
                    f"Out of memory on {self.components.device} for {request.width}x{request.height} "
                    f"x{request.count}. Try a smaller size or fewer images."
                ) from exc
            raise
        request = plan.result_request
        check_finite(out.images, str(self.components.device), self.model_name)
        pil = floats_to_pil(plan.finish(out.images))
        images = tuple(GeneratedImage(image=img, seed=seed, index=i) for i, (img, seed) in enumerate(zip(pil, out.seeds)))
        first = getattr(out, "first_pass", None)
        first_pass = () if first is None else tuple(
            GeneratedImage(image=img, seed=seed, index=i) for i, (img, seed) in enumerate(zip(floats_to_pil(first), out.seeds))
        )
        log.info(
            "generated %d image(s) %dx%d in %.2fs (%s, %s)",
            len(images), request.width, request.height, out.timings.get("total", 0.0), self.name, self.model_name,
        )
        return GenerationResult(
            request=request,
            images=images,
            model_name=self.model_name,
            engine=self.name,
            timings=out.timings,
            warnings=tuple(out.warnings),
            truncated_prompt=out.truncated_prompt,
            truncated_negative=out.truncated_negative,
            first_pass=first_pass,
            interrupted=out.interrupted,
            model_hash=self.model_hash,
        )

    def close(self) -> None:
        """Release the model's memory (CPU and device) before another one loads."""
        if self.components is not None:
            self.components.release()
            self.components = None
        gc.collect()
        _empty_device_cache()


def _empty_device_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()
