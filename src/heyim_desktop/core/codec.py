"""Requests as JSON-friendly data, for the local API, batch files and job queues.

Decoding is strict: unknown fields, wrong types and out-of-range values raise
:class:`InvalidRequest` naming the field, with the same rules as :class:`GenerationRequest`.
An input image travels inline as base64 (never as a path the receiver would read).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any, Mapping

from heyim_desktop.core.errors import ImageError, InvalidRequest
from heyim_desktop.core.request import GenerationRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
#: Largest inline input image accepted, in bytes after base64 decoding.
MAX_INLINE_IMAGE_BYTES = 7 * 1024 * 1024

_FIELDS: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "prompt": (str,),
    "negative_prompt": (str,),
    "steps": (int,),
    "guidance": (int, float),
    "seed": (int, type(None)),
    "width": (int,),
    "height": (int,),
    "scheduler": (str, type(None)),
    "count": (int,),
    "strength": (int, float),
    "guidance_boost": (int, float),
    "model": (str, type(None)),
    "init_image": (str, type(None)),
    "hires": (dict, type(None)),
    "refiner": (str, type(None)),
    "refiner_switch": (int, float),
    "clip_skip": (int,),
    "styles": (list,),
    "inpaint": (dict, type(None)),
    "extend": (list, type(None)),
    "loras": (list, type(None)),
    "embeddings": (list, type(None)),
    "controlnet": (list, type(None)),
}
_CONTROLNET_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "image": (str, type(None)), "weight": (int, float), "guidance_start": (int, float),
    "guidance_end": (int, float), "control_mode": (str, int), "resize_mode": (str,), "module": (str,),
    "processor_res": (int,), "threshold_a": (int, float), "threshold_b": (int, float), "pixel_perfect": (bool,),
    "annotator": (str,),
}
_INPAINT_FIELDS: dict[str, tuple[type, ...]] = {
    "mask": (str,), "mask_blur": (int,), "invert": (bool,), "fill": (str,), "only_masked": (bool,),
    "padding": (int,), "keep_unmasked": (bool,),
}
#: Hires fix settings as data (a model upscaler travels by name; its file is found by the receiver).
_HIRES_FIELDS = ("scale", "upscaler", "steps", "denoising_strength", "resize_x", "resize_y", "save_first_pass")


def _hires_from_data(data: Mapping[str, Any]) -> Any:
    from heyim_desktop.core.request import HiresFix

    unknown = sorted(set(data) - set(_HIRES_FIELDS))
    if unknown:
        raise InvalidRequest("hires", f"unknown field {unknown[0]!r}; allowed: {', '.join(_HIRES_FIELDS)}")
    return HiresFix(**data)


def encode_image(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: str, field: str = "init_image", *, mask: bool = False) -> Any:
    from heyim_desktop.core.images import load_image, load_mask

    if "," in data[:100] and data.lstrip().startswith("data:"):
        data = data.split(",", 1)[1]  # data URL
    if len(data) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequest(field, f"image is larger than {MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, "is not valid base64") from None
    try:
        return load_mask(raw, name=field) if mask else load_image(raw, name=field)
    except ImageError as exc:
        raise InvalidRequest(field, str(exc).removeprefix(f"{field} ").strip()) from None


def request_to_data(request: GenerationRequest, *, include_paths: bool = False) -> dict[str, Any]:
    """Plain data for ``request``. File paths (LoRAs, embeddings) travel only with ``include_paths``,
    between processes of one machine; elsewhere LoRAs go by name and the receiver resolves them."""
    data = {k: v for k, v in request.settings().items() if v is not None}
    if request.loras:
        data["loras"] = [{"name": u.name, "weight": u.weight, **({"path": u.path} if include_paths else {})}
                         for u in request.loras]
    data.pop("embeddings", None)
    if include_paths and request.embeddings:
        data["embeddings"] = [{"path": u.path, "word": u.word} for u in request.embeddings]
    data["seed"] = request.seed
    if request.init_image is not None:
        data["init_image"] = encode_image(request.init_image)
        data["strength"] = request.strength
        data["guidance_boost"] = request.guidance_boost
    if request.inpaint is not None:
        data["inpaint"] = dict(data["inpaint"], mask=encode_image(request.inpaint.mask))
    if request.controlnets:
        data["controlnet"] = [
            dict(u.settings(), image=None if u.image is None else encode_image(u.image)) for u in request.controlnets
        ]
    return data


def controlnet_from_data(units: list[Any], trust_paths: bool = False) -> tuple[Any, ...]:
    """ControlNet units from their JSON form (``controlnet`` of a request).

    Untrusted data only names a ControlNet (a path is cut to its last part; receivers
    resolve the name against their model library); only HeyIm's own engine process may
    hand over a path."""
    from heyim_desktop.core.controlnet import ControlUnit

    out = []
    for i, value in enumerate(units):
        where = f"controlnet[{i}]"
        if not isinstance(value, Mapping):
            raise InvalidRequest(where, "must be an object")
        unknown = sorted(set(value) - set(_CONTROLNET_FIELDS))
        if unknown:
            raise InvalidRequest(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_CONTROLNET_FIELDS))}")
        for key, item in value.items():
            types = _CONTROLNET_FIELDS[key]
            if (isinstance(item, bool) and bool not in types) or not isinstance(item, types):
                raise InvalidRequest(f"{where}.{key}", f"has the wrong type ({type(item).__name__})")
        if "model" not in value:
            raise InvalidRequest(f"{where}.model", "is required")
        model = value["model"]
        if not trust_paths:  # a name only: the receiver looks it up in its own model library
            model = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].removesuffix(".safetensors")
        image = value.get("image")
        out.append(ControlUnit(
            model=model, image=decode_image(image, field=f"{where}.image") if image else None,
            weight=value.get("weight", 1.0), start=value.get("guidance_start", 0.0), end=value.get("guidance_end", 1.0),
            mode=value.get("control_mode", "balanced"), resize_mode=value.get("resize_mode", "Crop and Resize"),
            preprocessor=value.get("module", "none"), processor_res=value.get("processor_res", -1),
            threshold_a=value.get("threshold_a", -1.0), threshold_b=value.get("threshold_b", -1.0),
            pixel_perfect=value.get("pixel_perfect", False),
            # A path: only HeyIm's own engine process takes it; others resolve it from their library.
            annotator=value.get("annotator", "") if trust_paths else "",
        ))
    return tuple(out)


def _inpaint_from_data(value: Mapping[str, Any]) -> Any:
    from heyim_desktop.core.masking import InpaintSpec

    unknown = sorted(set(value) - set(_INPAINT_FIELDS))
    if unknown:
        raise InvalidRequest(f"inpaint.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_INPAINT_FIELDS))}")
    for key, item in value.items():
        types = _INPAINT_FIELDS[key]
        if (isinstance(item, bool) and bool not in types) or not isinstance(item, types):
            raise InvalidRequest(f"inpaint.{key}", f"has the wrong type ({type(item).__name__})")
    if "mask" not in value:
        raise InvalidRequest("inpaint.mask", "is required")
    mask = decode_image(value["mask"], field="mask", mask=True)
    return InpaintSpec(
        mask=mask, blur=value.get("mask_blur", 4), invert=value.get("invert", False), fill=value.get("fill", "original"),
        only_masked=value.get("only_masked", False), padding=value.get("padding", 32),
        keep_unmasked=value.get("keep_unmasked", True),
    )


def _extend_from_data(value: list[Any]) -> Any:
    from heyim_desktop.core.masking import Extend

    if len(value) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidRequest("extend", "must be four whole numbers: left, top, right, bottom")
    return Extend(*value)


def _loras_from_data(value: list[Any], trust_paths: bool) -> tuple[Any, ...]:
    from heyim_desktop.core.lora import LoraUse

    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("name", ""), str):
            raise InvalidRequest(f"loras[{i}]", "must be an object with a name and a weight")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InvalidRequest(f"loras[{i}].weight", "must be a number")
        path = item.get("path", "") if trust_paths else ""
        if not isinstance(path, str):
            raise InvalidRequest(f"loras[{i}].path", "must be text")
        out.append(LoraUse(path=path, weight=float(weight), name=item.get("name", "")))
    return tuple(out)


def _embeddings_from_data(value: list[Any]) -> tuple[Any, ...]:
    from heyim_desktop.core.lora import EmbeddingUse

    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) for k in ("path", "word")):
            raise InvalidRequest(f"embeddings[{i}]", "must be an object with a path and a word")
        out.append(EmbeddingUse(item["path"], item["word"]))
    return tuple(out)


def request_from_data(
    data: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None, trust_paths: bool = False,
    init_image: Any = None,
) -> GenerationRequest:
    """A request from plain data. ``trust_paths`` only for data from HeyIm's own engine process.

    ``init_image``: an already decoded input image, used instead of (and without) an
    ``init_image`` field (the API decodes and shrinks it itself, within its pixel budget).
    """
    if not isinstance(data, Mapping):
        raise InvalidRequest("request", "must be a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field; allowed: {', '.join(sorted(_FIELDS))}")
    merged: dict[str, Any] = dict(defaults or {})
    merged.update(data)
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        types = _FIELDS.get(key)
        if types is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else {"str": "text", "int": "integer", "float": "number"}.get(t.__name__, t.__name__) for t in types)  # type: ignore[union-attr]
            raise InvalidRequest(key, f"must be {names}, got {type(value).__name__}")
        if isinstance(value, str) and _SURROGATE.search(value):
            raise InvalidRequest(key, "is not valid Unicode text (it holds a lone surrogate)")
        kwargs[key] = value
    if "prompt" not in kwargs:
        raise InvalidRequest("prompt", "is required")
    hires_data = kwargs.pop("hires", None)
    if hires_data:
        kwargs["hires"] = _hires_from_data(hires_data)
    image_data = kwargs.pop("init_image", None)
    if init_image is not None:
        kwargs["init_image"] = init_image
    elif image_data is not None:  # "" is an empty image, not text-to-image
        kwargs["init_image"] = decode_image(image_data)
    if kwargs.get("inpaint") is not None:
        kwargs["inpaint"] = _inpaint_from_data(kwargs["inpaint"])
    if kwargs.get("extend") is not None:
        kwargs["extend"] = _extend_from_data(kwargs["extend"])
    kwargs["loras"] = _loras_from_data(kwargs.pop("loras", None) or [], trust_paths)
    embeddings = kwargs.pop("embeddings", None) or []
    kwargs["embeddings"] = _embeddings_from_data(embeddings) if trust_paths else ()
    if kwargs.get("controlnet") is not None:
        kwargs["controlnets"] = controlnet_from_data(kwargs.pop("controlnet"), trust_paths)
    else:
        kwargs.pop("controlnet", None)
    return GenerationRequest(**kwargs)
