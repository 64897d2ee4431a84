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
#: AUTOMATIC1111's default: the refiner takes over for the last 20% of the steps.
DEFAULT_REFINER_SWITCH = 0.8
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


#: Hires fix: denoising strength of the second pass (AUTOMATIC1111 allows 0-1; 0 keeps the upscale as is).
HIRES_STEPS_RANGE = (0, 150)


@dataclass(frozen=True)
class HiresFix:
    """AUTOMATIC1111's hires fix: generate at the request's size, upscale, refine with image-to-image.

    ``upscaler`` is a latent mode ("Latent", ...), "Lanczos"/"Nearest", or an upscaler model's name;
    for a model, the app (which knows the model library) fills ``upscaler_path`` before the job runs.
    ``resize_x``/``resize_y`` (either or both) override ``scale``; ``steps`` 0 means the first
    pass's steps. The first pass's images are kept in the result only with ``save_first_pass``.
    """

    scale: float = 2.0
    upscaler: str = "Latent"
    steps: int = 0
    denoising_strength: float = 0.7
    resize_x: int = 0
    resize_y: int = 0
    save_first_pass: bool = False
    upscaler_path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _check_float("hires_scale", self.scale, 1.0, 8.0))
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise InvalidRequest("hires_upscaler", "must name an upscaler")
        _check_int("hires_steps", self.steps, *HIRES_STEPS_RANGE)
        object.__setattr__(self, "denoising_strength",
                           _check_float("denoising_strength", self.denoising_strength, 0.0, 1.0))
        for name in ("resize_x", "resize_y"):
            value = _check_int(f"hires_{name}", getattr(self, name), 0, SIZE_RANGE[1])
            if value and value < SIZE_RANGE[0]:
                raise InvalidRequest(f"hires_{name}", f"must be 0 (use the scale) or from {SIZE_RANGE[0]} to {SIZE_RANGE[1]}")
        if not isinstance(self.save_first_pass, bool):
            raise InvalidRequest("hires_save_first_pass", "must be true or false")

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The second pass's size (multiples of 8), as AUTOMATIC1111 derives it."""
        if self.resize_x and self.resize_y:
            w, h = self.resize_x, self.resize_y
        elif self.resize_x:
            w, h = self.resize_x, round(height * self.resize_x / width)
        elif self.resize_y:
            w, h = round(width * self.resize_y / height), self.resize_y
        else:
            w, h = int(width * self.scale), int(height * self.scale)
        w, h = w - w % 8, h - h % 8
        for label, value in (("width", w), ("height", h)):
            if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
                raise InvalidRequest(
                    "hires_scale", f"the hires {label} would be {value}; it must be from {SIZE_RANGE[0]} to {SIZE_RANGE[1]}"
                )
        return w, h

    def second_pass_steps(self, first_steps: int) -> int:
        return self.steps or first_steps

    def settings(self) -> dict[str, Any]:
        return {
            "scale": self.scale, "upscaler": self.upscaler, "steps": self.steps,
            "denoising_strength": self.denoising_strength, "resize_x": self.resize_x, "resize_y": self.resize_y,
            "save_first_pass": self.save_first_pass,
        }


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one job needs. Build it once; change it with :meth:`replace`.

    ``guidance`` of 1 or less turns classifier-free guidance off. With an ``init_image``
    the job is image-to-image: ``guidance_boost`` is added to ``guidance`` and
    ``strength`` in (0, 1] says how much of the image is re-imagined. With a ``refiner``
    (a model reference, an SDXL refiner) the job hands over to it once ``refiner_switch``
    of the denoising is done (diffusers' ``denoising_end`` / ``denoising_start``).
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
    #: Hires fix (text-to-image only): see :class:`HiresFix`.
    hires: HiresFix | None = None
    refiner: str | None = None
    refiner_switch: float = DEFAULT_REFINER_SWITCH
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
        if self.refiner is not None and (not isinstance(self.refiner, str) or not self.refiner.strip()):
            raise InvalidRequest("refiner", "must name a refiner model, or be left out")
        switch = _check_float("refiner_switch", self.refiner_switch, 0.0, 1.0)
        if self.refiner is not None and not 0.0 < switch < 1.0:
            raise InvalidRequest("refiner_switch", f"must be between 0 and 1 (exclusive), got {switch:g}")
        object.__setattr__(self, "refiner_switch", switch)
        if self.refiner is not None and (self.inpaint is not None or self.extend is not None):
            raise InvalidRequest("refiner", "a refiner cannot finish inpainting or outpainting yet; leave it out")
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
        if self.hires is not None:
            if not isinstance(self.hires, HiresFix):
                raise InvalidRequest("hires", "must be hires fix settings")
            if self.init_image is not None:
                raise InvalidRequest("hires", "hires fix is for text-to-image; this request has an input image")
            self.hires.target_size(self.width, self.height)
            if int(self.hires.second_pass_steps(self.steps) * self.hires.denoising_strength) < 1 \
                    and self.hires.denoising_strength > 0:
                raise InvalidRequest("denoising_strength", "leaves no second-pass step to run; raise it or the hires steps")

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
            **({"hires": self.hires.settings()} if self.hires is not None else {}),
            "refiner": self.refiner,
            "refiner_switch": self.refiner_switch if self.refiner else None,
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
