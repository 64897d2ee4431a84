"""The one description of a generation job: frozen, validated once when it is built."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.schedulers import DEFAULT_IMG2IMG, DEFAULT_TXT2IMG, canonical_name

if TYPE_CHECKING:
    from PIL import Image

    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.lora import EmbeddingUse, LoraUse
    from heyim_desktop.core.masking import Extend, InpaintSpec

MAX_SEED = 2**32 - 1
STEPS_RANGE = (1, 150)
GUIDANCE_RANGE = (0.0, 30.0)
SIZE_RANGE = (64, 2048)
COUNT_RANGE = (1, 16)
#: HeyIm's original design raised guidance by 1.5 for image-to-image; it is the default.
IMG2IMG_GUIDANCE_BOOST = 1.5
MAX_PROMPT_CHARS = 10_000
#: AUTOMATIC1111's "CLIP_stop_at_last_layers": 1 uses the text encoder's last layer, 2 the one before it.
CLIP_SKIP_RANGE = (1, 12)
MAX_STYLES = 20


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be a whole number from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, f"must be from {lo} to {hi}, got {value}")
    return value


def _check_float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise InvalidRequest(name, f"must be from {lo:g} to {hi:g}, got {number:g}")
    return number


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one job needs. Build it once; change it with :meth:`replace`.

    ``guidance`` of 1 or less turns classifier-free guidance off. With an ``init_image``
    the job is image-to-image: ``guidance_boost`` is added to ``guidance`` and
    ``strength`` in (0, 1] says how much of the image is re-imagined.
    """

    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    seed: int | None = None
    width: int = 512
    height: int = 512
    scheduler: str | None = None
    count: int = 1
    init_image: "Image.Image | None" = field(default=None, compare=False, repr=False)
    strength: float = 0.75
    guidance_boost: float = IMG2IMG_GUIDANCE_BOOST
    model: str | None = None
    #: AUTOMATIC1111's count: 1 is no skip (diffusers' ``clip_skip`` is this minus one).
    clip_skip: int = 1
    #: Names of the prompt styles already expanded into ``prompt``/``negative_prompt`` (for metadata).
    styles: tuple[str, ...] = ()
    #: Inpainting: repaint the white part of a mask over ``init_image``.
    inpaint: "InpaintSpec | None" = None
    #: Outpainting: grow ``init_image``'s canvas (the new border is inpainted).
    extend: "Extend | None" = None
    #: ControlNets guiding the job, each with its control image.
    controlnets: "tuple[ControlUnit, ...]" = ()
    #: LoRAs by file (front ends resolve ``<lora:name:w>`` tags into these: core.lora.resolve_networks).
    loras: "tuple[LoraUse, ...]" = ()
    #: Textual-inversion embeddings the prompt's words activate.
    embeddings: "tuple[EmbeddingUse, ...]" = ()

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidRequest("prompt", "must not be empty")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", f"must be at most {MAX_PROMPT_CHARS} characters")
        if not isinstance(self.negative_prompt, str):
            raise InvalidRequest("negative_prompt", "must be text")
        if len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("negative_prompt", f"must be at most {MAX_PROMPT_CHARS} characters")
        _check_int("steps", self.steps, *STEPS_RANGE)
        object.__setattr__(self, "guidance", _check_float("guidance", self.guidance, *GUIDANCE_RANGE))
        if self.seed is not None:
            _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("width", "height"):
            value = _check_int(name, getattr(self, name), *SIZE_RANGE)
            if value % 8:
                raise InvalidRequest(name, f"must be a multiple of 8 from {SIZE_RANGE[0]} to {SIZE_RANGE[1]}, got {value}")
        _check_int("count", self.count, *COUNT_RANGE)
        if self.init_image is not None:
            strength = _check_float("strength", self.strength, 0.0, 1.0)
            if strength == 0.0:
                raise InvalidRequest("strength", "must be greater than 0 and at most 1, got 0")
            if int(self.steps * strength) < 1:
                raise InvalidRequest(
                    "strength",
                    f"{strength:g} x {self.steps} steps leaves no step to run; raise the strength or the steps",
                )
            object.__setattr__(self, "strength", strength)
        if (self.inpaint is not None or self.extend is not None) and self.init_image is None:
            raise InvalidRequest("mask", "inpainting and outpainting need an input image")
        if self.extend is not None:
            w = self.width + self.extend.left + self.extend.right
            h = self.height + self.extend.top + self.extend.bottom
            if w > SIZE_RANGE[1] or h > SIZE_RANGE[1]:
                raise InvalidRequest("extend", f"the grown canvas {w}x{h} is larger than {SIZE_RANGE[1]}x{SIZE_RANGE[1]}")
        if self.controlnets:
            from heyim_desktop.core.controlnet import MAX_UNITS, ControlUnit

            units = tuple(self.controlnets)
            if not all(isinstance(u, ControlUnit) for u in units):
                raise InvalidRequest("controlnet", "each ControlNet must be a ControlUnit")
            if len(units) > MAX_UNITS:
                raise InvalidRequest("controlnet", f"at most {MAX_UNITS} ControlNets per image, got {len(units)}")
            object.__setattr__(self, "controlnets", units)
        object.__setattr__(self, "guidance_boost", _check_float("guidance_boost", self.guidance_boost, 0.0, 10.0))
        _check_int("clip_skip", self.clip_skip, *CLIP_SKIP_RANGE)
        if isinstance(self.styles, list):
            object.__setattr__(self, "styles", tuple(self.styles))
        if not isinstance(self.styles, tuple) or not all(isinstance(s, str) and s.strip() for s in self.styles):
            raise InvalidRequest("styles", "must be a list of style names")
        if len(self.styles) > MAX_STYLES:
            raise InvalidRequest("styles", f"at most {MAX_STYLES} styles at once")
        if self.scheduler is None or self.scheduler == "":
            object.__setattr__(self, "scheduler", DEFAULT_IMG2IMG if self.init_image is not None else DEFAULT_TXT2IMG)
        else:
            if not isinstance(self.scheduler, str):
                raise InvalidRequest("scheduler", "must be a scheduler name")
            object.__setattr__(self, "scheduler", canonical_name(self.scheduler))

    # -- derived values -------------------------------------------------------------
    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    @property
    def is_inpaint(self) -> bool:
        return self.inpaint is not None

    @property
    def scheduler_name(self) -> str:
        assert self.scheduler is not None  # set in __post_init__
        return self.scheduler

    @property
    def effective_guidance(self) -> float:
        """The guidance scale the loop uses: image-to-image adds ``guidance_boost``."""
        if self.is_img2img:
            return self.guidance + self.guidance_boost
        return self.guidance

    @property
    def uses_cfg(self) -> bool:
        return self.effective_guidance > 1.0

    def image_seeds(self) -> list[int]:
        """One seed per image: ``seed``, ``seed + 1``, ... so each image can be remade alone."""
        if self.seed is None:
            raise ValueError("resolve the seed first (with_seed)")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def with_seed(self) -> GenerationRequest:
        """This request with a concrete seed (drawn at random when none was given)."""
        if self.seed is not None:
            return self
        return replace(self, seed=secrets.randbelow(MAX_SEED + 1))

    def replace(self, **changes: Any) -> GenerationRequest:
        return replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """The request's settings as plain data (no image), for history and APIs."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "scheduler": self.scheduler,
            "count": self.count,
            "strength": self.strength if self.is_img2img else None,
            "guidance_boost": self.guidance_boost if self.is_img2img else None,
            "model": self.model,
            "clip_skip": self.clip_skip,
            "styles": list(self.styles),
            **_edit_settings(self),
        }


def _edit_settings(request: GenerationRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spec = request.inpaint
    if spec is not None:
        out["inpaint"] = {
            "mask_blur": spec.blur, "invert": spec.invert, "fill": spec.fill,
            "only_masked": spec.only_masked, "padding": spec.padding, "keep_unmasked": spec.keep_unmasked,
        }
    if request.extend is not None:
        e = request.extend
        out["extend"] = [e.left, e.top, e.right, e.bottom]
    if request.controlnets:
        out["controlnet"] = [u.settings() for u in request.controlnets]
    if request.loras:
        out["loras"] = [{"path": u.path, "weight": u.weight, "name": u.name} for u in request.loras]
    if request.embeddings:
        out["embeddings"] = [{"path": u.path, "word": u.word} for u in request.embeddings]
    return out
