"""What a loaded model can do, as one plain value the window, the API and the CLI read.

Nothing outside an engine looks at its components: they learn sizes, limits and features
from :class:`Capabilities` (inside :class:`~heyim_desktop.core.engine.EngineInfo`), which
crosses process boundaries as plain data (:meth:`Capabilities.to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

#: How a model is steered towards the prompt.
GuidanceKind = Literal["cfg", "embedded", "none"]
#: How a model repaints a masked area: not at all, by blending the kept area back after
#: each step (any 4-channel UNet), or with an inpainting UNet's extra input channels.
InpaintKind = Literal["none", "blend", "concat"]

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux2", "zimage")


@dataclass(frozen=True)
class Recommended:
    """Settings a model is meant to be used with (few-step models especially)."""

    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    #: Where these come from, for the window to show ("model config", "known model").
    source: str = ""


@dataclass(frozen=True)
class Capabilities:
    family: str = "sd1"
    img2img: bool = True
    inpaint: InpaintKind = "blend"
    #: AUTOMATIC1111's ``(word:1.2)`` weights act on the embeddings.
    prompt_weights: bool = True
    #: Longest prompt in 75-token chunks; 1 means the 77-token window only (cut beyond it).
    max_prompt_chunks: int = 1
    #: The model's token window (77 for CLIP).
    token_window: int = 77
    guidance: GuidanceKind = "cfg"
    #: The guidance values this model is meant for (the window's range); requests allow 0 to 30.
    guidance_range: tuple[float, float] = (0.0, 30.0)
    negative_prompt: bool = True
    #: (width, height) when the model only makes one size (Core ML), else None.
    fixed_size: tuple[int, int] | None = None
    default_size: tuple[int, int] = (512, 512)
    size_step: int = 8
    max_batch: int = 1
    runtime_lora: bool = False
    controlnet: bool = False
    clip_skip: bool = True
    #: The sampler names this model accepts; empty means every SD scheduler.
    schedulers: tuple[str, ...] = ()
    recommended: Recommended = field(default_factory=Recommended)

    @property
    def chunked_prompts(self) -> bool:
        return self.max_prompt_chunks > 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fixed_size"] = list(self.fixed_size) if self.fixed_size else None
        data["default_size"] = list(self.default_size)
        data["schedulers"] = list(self.schedulers)
        data["guidance_range"] = list(self.guidance_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Capabilities":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("fixed_size") is not None:
            values["fixed_size"] = tuple(values["fixed_size"])
        if "default_size" in values:
            values["default_size"] = tuple(values["default_size"])
        if "guidance_range" in values:
            values["guidance_range"] = (float(values["guidance_range"][0]), float(values["guidance_range"][1]))
        if "schedulers" in values:
            values["schedulers"] = tuple(values["schedulers"])
        if isinstance(values.get("recommended"), dict):
            rec_known = {f.name for f in fields(Recommended)}
            values["recommended"] = Recommended(**{k: v for k, v in values["recommended"].items() if k in rec_known})
        return cls(**values)
