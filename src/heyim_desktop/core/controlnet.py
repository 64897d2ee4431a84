"""ControlNet on the shared loop: the request's units and the extension that adds their residuals.

Each :class:`ControlUnit` names a ControlNet, a control image (or a photo and the
preprocessor that makes the map), a weight and the fraction of the steps it acts on.
:class:`ControlNetExtension` runs the units' ControlNets before every UNet call and hands
their summed residuals to the UNet through :class:`~heyim_desktop.core.conditioning.UNetCall`,
as diffusers' StableDiffusionControlNetPipeline and its MultiControlNet do.

Control modes (the AUTOMATIC1111 extension's three):

* "balanced": the residuals scaled by the weight, on both halves of the guidance batch.
* "prompt" ("My prompt is more important"): the extension's soft injection: residual ``i``
  of ``n`` (down blocks first, the mid block last) is scaled by ``weight * 0.825 ** (12 - i)``
  on both halves; for SDXL's 10 residuals that is the same first 10 factors the extension
  pairs with them.
* "controlnet" ("ControlNet is more important"): diffusers' guess mode: the ControlNet runs
  on the prompt half only, the negative half gets zeros, and the residuals are scaled from
  0.1 to 1.0 on a log scale (inside diffusers' ``ControlNetModel``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.extensions import BaseExtension, LoopState

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from heyim_desktop.core.components import Components
    from heyim_desktop.core.conditioning import TextCond, UNetCall
    from heyim_desktop.core.request import GenerationRequest

#: Our names, and the extension's words for them (API, infotext).
CONTROL_MODES = {"balanced": "Balanced", "prompt": "My prompt is more important",
                 "controlnet": "ControlNet is more important"}
MAX_UNITS = 4
WEIGHT_RANGE = (0.0, 2.0)
#: The extension's soft-injection base ("My prompt is more important").
SOFT_BASE = 0.825


def _number(name: str, value: Any, lo: float, hi: float) -> float:
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InvalidRequest(name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
    if not lo <= float(value) <= hi:
        raise InvalidRequest(name, f"must be from {lo:g} to {hi:g}, got {float(value):g}")
    return float(value)


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet of a request. ``image`` None means the request's input image."""

    #: A ControlNet folder (diffusers) or a single ``.safetensors`` file.
    model: str
    image: "Image.Image | None" = field(default=None, compare=False, repr=False)
    weight: float = 1.0
    #: Fractions of the steps the unit acts on (the extension's guidance start/end).
    start: float = 0.0
    end: float = 1.0
    mode: str = "balanced"
    resize_mode: str = "Crop and Resize"
    preprocessor: str = "none"
    #: The extension's detector resolution and two sliders; -1 means the preprocessor's default.
    processor_res: int = -1
    threshold_a: float = -1.0
    threshold_b: float = -1.0
    #: The extension's "Pixel Perfect": the detector resolution follows the generation size
    #: (:func:`pixel_perfect_resolution`) instead of ``processor_res``.
    pixel_perfect: bool = False
    #: The model folder or file a network preprocessor (depth, openpose, LaMa) runs, found in the
    #: library's annotator folder when the request is resolved; empty for the model-free ones.
    annotator: str = ""

    def __post_init__(self) -> None:
        from heyim_desktop.core.control_preprocess import RESIZE_MODES, canonical

        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidRequest("controlnet.model", "must name a ControlNet")
        object.__setattr__(self, "weight", _number("controlnet.weight", self.weight, *WEIGHT_RANGE))
        start = _number("controlnet.guidance_start", self.start, 0.0, 1.0)
        end = _number("controlnet.guidance_end", self.end, 0.0, 1.0)
        if start > end:
            raise InvalidRequest("controlnet.guidance_start", f"must not be after the end ({start:g} > {end:g})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        mode = _mode_name(self.mode)
        object.__setattr__(self, "mode", mode)
        if self.resize_mode not in RESIZE_MODES:
            raise InvalidRequest("controlnet.resize_mode", f"must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        object.__setattr__(self, "preprocessor", canonical(self.preprocessor))
        if isinstance(self.processor_res, bool) or not isinstance(self.processor_res, int):
            raise InvalidRequest("controlnet.processor_res", f"must be a whole number, got {self.processor_res!r}")
        for name in ("threshold_a", "threshold_b"):
            object.__setattr__(self, name, _number(f"controlnet.{name}", getattr(self, name), -1.0, 1e4))
        if not isinstance(self.pixel_perfect, bool):
            raise InvalidRequest("controlnet.pixel_perfect", f"must be true or false, got {self.pixel_perfect!r}")

    @property
    def model_name(self) -> str:
        from pathlib import Path

        p = Path(self.model)
        return p.stem if p.suffix == ".safetensors" else p.name

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model, "weight": self.weight, "guidance_start": self.start, "guidance_end": self.end,
            "control_mode": self.mode, "resize_mode": self.resize_mode, "module": self.preprocessor,
            "processor_res": self.processor_res, "threshold_a": self.threshold_a, "threshold_b": self.threshold_b,
            "pixel_perfect": self.pixel_perfect, **({"annotator": self.annotator} if self.annotator else {}),
        }


def _mode_name(value: Any) -> str:
    """Our mode name for ours, the extension's words or its 0/1/2."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CONTROL_MODES):
        return list(CONTROL_MODES)[value]
    if isinstance(value, str):
        key = value.strip()
        if key in CONTROL_MODES:
            return key
        for ours, words in CONTROL_MODES.items():
            if key.lower() == words.lower():
                return ours
    raise InvalidRequest("controlnet.control_mode", f"must be one of {', '.join(CONTROL_MODES.values())}, got {value!r}")


def keep_factor(step: int, steps: int, start: float, end: float) -> float:
    """1 while the unit acts at ``step`` of ``steps``, else 0 (diffusers' controlnet_keep)."""
    return 1.0 - float(step / steps < start or (step + 1) / steps > end)


def pixel_perfect_resolution(size: tuple[int, int], width: int, height: int, resize_mode: str) -> int:
    """The extension's pixel-perfect detector resolution for an image of ``size`` (w, h) made into
    ``width x height``: the short side scaled by the factor the resize mode fits with (the smaller
    for "Resize and Fill", the larger otherwise), rounded; kept within the detectors' 64..2048."""
    raw_w, raw_h = size
    k_h, k_w = height / raw_h, width / raw_w
    k = min(k_h, k_w) if resize_mode == "Resize and Fill" else max(k_h, k_w)
    return max(64, min(2048, int(round(k * min(raw_w, raw_h)))))


def soft_scales(n: int) -> list[float]:
    """The extension's "My prompt is more important" factors for ``n`` residuals (mid last)."""
    return [SOFT_BASE ** float(12 - i) for i in range(n)]


def control_images(request: "GenerationRequest", device: str = "cpu") -> list[Any]:
    """Each unit's control map, (H, W, 3) float32 as the ControlNet takes it (a network
    preprocessor runs on ``device``)."""
    from heyim_desktop.core.control_preprocess import control_array

    mask = None
    if request.inpaint is not None:
        from heyim_desktop.core.masking import prepare_mask

        mask = prepare_mask(request.inpaint, request.width, request.height)
    out = []
    for i, unit in enumerate(request.controlnets):
        image = unit.image if unit.image is not None else request.init_image
        if image is None:
            raise InvalidRequest("controlnet.image", f"ControlNet {i} has no control image (and the request no input image)")
        res = unit.processor_res
        if unit.pixel_perfect:
            res = pixel_perfect_resolution(image.size, request.width, request.height, unit.resize_mode)
        out.append(control_array(
            image, unit.preprocessor, request.width, request.height, resize_mode=unit.resize_mode,
            processor_res=res, threshold_a=unit.threshold_a, threshold_b=unit.threshold_b,
            seed=request.seed or 0, mask=mask, annotator=unit.annotator, device=device,
        ))
    return out


def lama_filled_image(request: "GenerationRequest", device: str = "cpu") -> Any:
    """The LaMa-filled control picture ((H, W, 3) uint8 at the generation size) of the request's
    last ``inpaint_only+lama`` unit, whose latent seeds the starting noise; None without one."""
    from heyim_desktop.core.control_preprocess import LAMA
    from heyim_desktop.core.lama_preprocess import control_fill

    units = [u for u in request.controlnets if u.preprocessor == LAMA]
    if not units or request.inpaint is None:
        return None
    from heyim_desktop.core.masking import prepare_mask

    unit = units[-1]
    image = unit.image if unit.image is not None else request.init_image
    if image is None:
        return None
    mask = prepare_mask(request.inpaint, request.width, request.height)
    return control_fill(image, request.width, request.height, unit.resize_mode, mask, unit.annotator, device)


def crop_control_images(units: "tuple[ControlUnit, ...]", canvas: tuple[int, int], box: tuple[int, int, int, int],
                        size: tuple[int, int]) -> "tuple[ControlUnit, ...]":
    """Units for inpainting "only masked": each own control image cropped with the input image.

    As the extension does it (its ``inpaint_crop_input_image``): the control image is brought to
    the input image's size with the unit's resize mode, cut to the crop ``box`` around the mask,
    and fitted to the generation ``size`` with "Resize and Fill". A unit without its own image
    uses the input image, which the crop already is."""
    from dataclasses import replace

    from heyim_desktop.core.control_preprocess import fit_control_image
    from heyim_desktop.core.images import to_rgb

    out = []
    for unit in units:
        if unit.image is None:
            out.append(unit)
            continue
        whole = fit_control_image(to_rgb(unit.image), canvas[0], canvas[1], unit.resize_mode)
        cropped = fit_control_image(whole.crop(box), size[0], size[1], "Resize and Fill")
        out.append(replace(unit, image=cropped))
    return tuple(out)


@dataclass
class _Prepared:
    unit: ControlUnit
    net: Any
    image: "torch.Tensor"
    guess: bool


class ControlNetExtension(BaseExtension):
    """Runs the request's ControlNets before each UNet call and adds their residuals."""

    def __init__(self, request: "GenerationRequest", components: "Components") -> None:
        import numpy as np
        import torch

        loader = getattr(components, "controlnet_model", None)
        if loader is None or not components.capabilities.controlnet:
            raise InvalidRequest("controlnet", "this model's engine cannot use ControlNet")
        self.components = components
        self.units: list[_Prepared] = []
        for unit, arr in zip(request.controlnets, control_images(request, str(components.device))):
            net = loader(unit.model)
            image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
            guess = unit.mode == "controlnet" or bool(getattr(net.config, "global_pool_conditions", False))
            self.units.append(_Prepared(unit, net, image.to(device=components.device, dtype=net.dtype), guess))

    def before_unet(self, state: LoopState, call: "UNetCall") -> None:
        from typing import cast

        import torch

        run = cast(Any, self.components).run_controlnet  # the torch engine's; checked when the job starts
        steps = len(state.timesteps)
        from heyim_desktop.core.guidance import ClassifierFree

        cfg = isinstance(state.guidance, ClassifierFree)
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for p in self.units:
            keep = keep_factor(state.step_index, steps, p.unit.start, p.unit.end)
            if not keep:
                continue  # diffusers runs it at scale 0, which adds exact zeros
            cond_only = p.guess and cfg
            sample, text = call.sample, call.text
            if cond_only:
                sample = sample.chunk(2)[1]
                text = _cond_half(text)
            image = p.image.expand(sample.shape[0], -1, -1, -1)
            scale = p.unit.weight * keep
            d, m = run(p.net, sample, call.timestep, text, image, scale=1.0 if p.unit.mode == "prompt" else scale,
                       guess_mode=p.guess)
            if p.unit.mode == "prompt":
                factors = soft_scales(len(d) + 1)
                d = [r * (scale * f) for r, f in zip(d, factors)]
                m = m * (scale * factors[len(d)])
            if cond_only:
                d = [torch.cat([torch.zeros_like(r), r]) for r in d]
                m = torch.cat([torch.zeros_like(m), m])
            if down is None or mid is None:
                down, mid = list(d), m
            else:
                down = [a + b for a, b in zip(down, d)]
                mid = mid + m
        if down is not None and mid is not None:
            call.down_residuals = down if call.down_residuals is None else [a + b for a, b in zip(call.down_residuals, down)]
            call.mid_residual = mid if call.mid_residual is None else call.mid_residual + mid


def _cond_half(text: "TextCond") -> "TextCond":
    return text.map(lambda t: t.chunk(2)[1])


def short_hash(path: str) -> str | None:
    """The extension's model hash: SHA-256 of 64 KiB at offset 1 MiB, 8 hex digits (cheap)."""
    import hashlib
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "diffusion_pytorch_model.safetensors"
    try:
        with p.open("rb") as fh:
            fh.seek(0x100000)
            return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
    except OSError:
        return None


def _fmt(value: float) -> str:
    return str(float(value))


def unit_infotext(unit: ControlUnit) -> str:
    """One unit as the extension writes it into infotext ("Module: canny, Model: name [hash], ...")."""
    from heyim_desktop.core.control_preprocess import DEFAULT_PROCESSOR_RES
    from heyim_desktop.core.control_preprocess import spec as preprocessor_spec

    spec = preprocessor_spec(unit.preprocessor)
    res = unit.processor_res if unit.processor_res > 0 else (DEFAULT_PROCESSOR_RES if spec.uses_resolution else -1)
    a = spec.slider_a.clamp(unit.threshold_a) if spec.slider_a else -1.0
    b = spec.slider_b.clamp(unit.threshold_b) if spec.slider_b else -1.0
    digest = short_hash(unit.model)
    model = f"{unit.model_name} [{digest}]" if digest else unit.model_name
    fields = [
        ("Module", unit.preprocessor), ("Model", model), ("Weight", _fmt(unit.weight)),
        ("Resize Mode", unit.resize_mode), ("Processor Res", str(res)), ("Threshold A", _fmt(a)),
        ("Threshold B", _fmt(b)), ("Guidance Start", _fmt(unit.start)), ("Guidance End", _fmt(unit.end)),
        ("Pixel Perfect", str(unit.pixel_perfect)), ("Control Mode", CONTROL_MODES[unit.mode]),
    ]
    return ", ".join(f"{k}: {v}" for k, v in fields)


def infotext_pairs(request: "GenerationRequest") -> list[tuple[str, str]]:
    return [(f"ControlNet {i}", unit_infotext(u)) for i, u in enumerate(request.controlnets)]


def parse_unit_text(text: str) -> dict[str, Any] | None:
    """A unit's infotext back to ControlUnit keywords (model: its name, hash dropped), or None."""
    import re

    values = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if sep:
            values[key.strip().lower()] = value.strip()
    if "model" not in values:
        return None
    out: dict[str, Any] = {"model": re.sub(r"\s*\[[0-9a-fA-F]+\]\s*$", "", values["model"])}

    def number(key: str) -> float | None:
        try:
            return float(values[key])
        except (KeyError, ValueError):
            return None

    for key, name in (("weight", "weight"), ("guidance start", "start"), ("guidance end", "end"),
                      ("threshold a", "threshold_a"), ("threshold b", "threshold_b")):
        v = number(key)
        if v is not None:
            out[name] = v
    res = number("processor res")
    if res is not None:
        out["processor_res"] = int(res)
    if "module" in values:
        out["preprocessor"] = values["module"]
    if "resize mode" in values:
        out["resize_mode"] = values["resize mode"]
    if values.get("pixel perfect") in ("True", "False"):
        out["pixel_perfect"] = values["pixel perfect"] == "True"
    if "control mode" in values:
        try:
            out["mode"] = _mode_name(values["control mode"])
        except InvalidRequest:
            pass
    return out


def controlnet_extensions(request: "GenerationRequest", components: "Components") -> list[BaseExtension]:
    """ControlNet units' extension and T2I-Adapter units' (a request may mix them)."""
    if not request.controlnets:
        return []
    from heyim_desktop.core.adapter_extension import AdapterExtension, split_units
    from heyim_desktop.core.control_preprocess import LAMA

    nets, adapters = split_units(request)
    out: list[BaseExtension] = []
    if nets is not None:
        out.append(ControlNetExtension(nets, components))
        if any(u.preprocessor == LAMA for u in nets.controlnets):
            from heyim_desktop.core.lama_preprocess import LamaNoise

            out.append(LamaNoise(nets, components))
    if adapters is not None:
        out.append(AdapterExtension(adapters, components))
    return out
