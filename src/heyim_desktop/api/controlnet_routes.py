"""The AUTOMATIC1111 ControlNet extension's API: its unit form and its ``/controlnet/*`` routes.

Units arrive in ``alwayson_scripts.controlnet.args`` of txt2img/img2img with the extension's
field names (``image`` or the older ``input_image``, ``module``, ``model``, ``weight``,
``guidance_start``/``guidance_end``, ``control_mode``, ``resize_mode``, ``processor_res``,
``threshold_a``/``threshold_b``). A model is named as ``/controlnet/model_list`` lists it
("name [hash]") and resolved against the model library, never used as a path.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from heyim_desktop.api.mapping import ApiError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from heyim_desktop.api.context import ApiContext
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models.types import ModelInfo

log = logging.getLogger(__name__)

#: What ``/controlnet/version`` answers (the extension's current API version).
API_VERSION = 3
#: The extension's resize modes by number, in its enum's order.
_RESIZE_BY_NUMBER = ("Just Resize", "Crop and Resize", "Resize and Fill")
_RESIZE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                   "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill"}
#: Unit fields that change nothing HeyIm makes, or have no equivalent here.
_IGNORED_UNIT_FIELDS = frozenset({"low_vram", "lowvram", "is_ui", "input_mode", "batch_images",
                                  "output_dir", "loopback", "hr_option", "save_detected_map", "inpaint_crop_input_image",
                                  "advanced_weighting", "effective_region_mask", "pulid_mode", "ipadapter_input",
                                  "mask", "mask_image"})
_UNIT_FIELDS = frozenset({"enabled", "module", "model", "weight", "image", "input_image", "resize_mode",
                          "processor_res", "threshold_a", "threshold_b", "guidance_start", "guidance_end",
                          "guidance", "control_mode", "pixel_perfect"})
ARGS_FIELD = "alwayson_scripts.controlnet.args"

ControlNetCatalog = Callable[[], Sequence["ModelInfo"]]


def library_controlnets() -> list["ModelInfo"]:
    """The ready ControlNets of the model library, with the folders chosen in Preferences."""
    from heyim_desktop.models.controlnets import ControlNetLibrary
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.store.preferences import load_preferences

    return ControlNetLibrary(ModelLibrary(load_preferences().model_folders)).ready()


def library_annotator(name: str) -> Path | None:
    """The model folder the library's annotator folders hold for network preprocessor ``name``."""
    from heyim_desktop.models.controlnets import ControlNetLibrary
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.store.preferences import load_preferences

    return ControlNetLibrary(ModelLibrary(load_preferences().model_folders)).annotator_folder(name)


AnnotatorLookup = Callable[[str], "Path | None"]


def _annotators(ctx: "ApiContext") -> AnnotatorLookup:
    found = getattr(ctx, "annotator_folder", None)
    return found if callable(found) else library_annotator


def _available_networks(lookup: AnnotatorLookup) -> list[str]:
    """The network preprocessors whose model is in the library (these the routes offer)."""
    from heyim_desktop.core.control_preprocess import NETWORK_SPECS

    return [name for name in NETWORK_SPECS if lookup(name) is not None]


def resolve_annotators(request: "GenerationRequest", lookup: AnnotatorLookup) -> "GenerationRequest":
    """Each network-preprocessor unit given its model folder; 422 saying what enables it when absent."""
    from heyim_desktop.core.control_preprocess import NETWORK_SPECS, network_hint

    units = []
    for i, unit in enumerate(request.controlnets):
        if unit.preprocessor in NETWORK_SPECS:
            folder = lookup(unit.preprocessor)
            if folder is None:
                field = f"{ARGS_FIELD}[{i}].module"
                raise ApiError(422, f"{field}: {network_hint(unit.preprocessor)}", field)
            unit = replace(unit, annotator=str(folder))
        units.append(unit)
    return request.replace(controlnets=tuple(units))


def _catalog(ctx: "ApiContext") -> ControlNetCatalog:
    found = getattr(ctx, "controlnets", None)
    return found if callable(found) else library_controlnets


def model_title(info: "ModelInfo") -> str:
    from heyim_desktop.core.controlnet import short_hash

    digest = short_hash(info.ref)
    return f"{info.name} [{digest}]" if digest else info.name


# -- the unit form ------------------------------------------------------------------------------


def _unit_image(unit: Mapping[str, Any], where: str, notes: list[str]) -> str | None:
    if "image" in unit and "input_image" in unit and unit["image"] is not None and unit["input_image"] is not None:
        raise ApiError(422, f"{where}.image: give image or input_image, not both", f"{where}.image")
    value = unit.get("image", unit.get("input_image"))
    if isinstance(value, Mapping):
        if value.get("mask") is not None:
            notes.append(f"{where}: the unit's own mask is ignored (the request's inpainting mask is used)")
        value = value.get("image")
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ApiError(422, f"{where}.image: an empty list", f"{where}.image")
        first = value[0]
        value = first.get("image") if isinstance(first, Mapping) else first
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"{where}.image: must be a base64 image", f"{where}.image")
    return value


def _resize_mode(value: Any, where: str) -> str:
    if value is None:
        return "Crop and Resize"
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(_RESIZE_BY_NUMBER):
        return _RESIZE_BY_NUMBER[value]
    if isinstance(value, str):
        name = _RESIZE_ALIASES.get(value, value)
        if name in _RESIZE_BY_NUMBER:
            return name
    raise ApiError(422, f"{where}.resize_mode: must be 0, 1, 2 or one of {', '.join(_RESIZE_BY_NUMBER)}, got {value!r}",
                   f"{where}.resize_mode")


def parse_units(scripts: Any, notes: list[str]) -> list[dict[str, Any]]:
    """``alwayson_scripts`` -> the request's ``controlnet`` entries (models still as names).

    Only the ControlNet script is accepted; other scripts are refused, as before.
    """
    if scripts is None or scripts == {}:
        return []
    if not isinstance(scripts, Mapping):
        raise ApiError(422, "alwayson_scripts: must be an object", "alwayson_scripts")
    others = sorted(k for k in scripts if str(k).lower() != "controlnet")
    if others:
        raise ApiError(422, f"alwayson_scripts.{others[0]}: not supported by HeyIm (only controlnet is)",
                       f"alwayson_scripts.{others[0]}")
    script = next(v for k, v in scripts.items() if str(k).lower() == "controlnet")
    args = script.get("args", []) if isinstance(script, Mapping) else script
    if not isinstance(args, list):
        raise ApiError(422, f"{ARGS_FIELD}: must be a list of units", ARGS_FIELD)
    out = []
    for i, unit in enumerate(args):
        where = f"{ARGS_FIELD}[{i}]"
        if not isinstance(unit, Mapping):
            raise ApiError(422, f"{where}: must be an object", where)
        if unit.get("enabled", True) is False:
            continue
        model = unit.get("model", "None")
        if not isinstance(model, str):
            raise ApiError(422, f"{where}.model: must be text", f"{where}.model")
        if model.strip() in ("", "None", "none"):
            continue  # the extension skips units without a model
        extra = sorted(k for k in unit if k not in _UNIT_FIELDS and k not in _IGNORED_UNIT_FIELDS)
        if extra:
            notes.append(f"{where}: ignored unknown fields: {', '.join(extra)}")
        entry: dict[str, Any] = {"model": model.strip(), "resize_mode": _resize_mode(unit.get("resize_mode"), where)}
        image = _unit_image(unit, where, notes)
        if image is not None:
            entry["image"] = image
        for key in ("module", "weight", "guidance_start", "guidance_end", "processor_res", "threshold_a",
                    "threshold_b", "control_mode", "pixel_perfect"):
            if unit.get(key) is not None:
                entry[key] = unit[key]
        if "guidance_end" not in entry and unit.get("guidance") is not None:
            entry["guidance_end"] = unit["guidance"]
        out.append(entry)
    return out


def unit_names(count: int) -> dict[str, str]:
    """Our field names -> the client's, for error messages about the units."""
    names = {}
    for ours, theirs in (("controlnet.weight", "weight"), ("controlnet.guidance_start", "guidance_start"),
                         ("controlnet.guidance_end", "guidance_end"), ("controlnet.control_mode", "control_mode"),
                         ("controlnet.module", "module"), ("controlnet.processor_res", "processor_res"),
                         ("controlnet.threshold_a", "threshold_a"), ("controlnet.threshold_b", "threshold_b"),
                         ("controlnet.resize_mode", "resize_mode"), ("controlnet.model", "model"),
                         ("controlnet.pixel_perfect", "pixel_perfect"),
                         ("controlnet.image", "image")):
        names[ours] = f"{ARGS_FIELD}[].{theirs}" if count != 1 else f"{ARGS_FIELD}[0].{theirs}"
    return names


def resolve_controlnets(request: "GenerationRequest", catalog: ControlNetCatalog) -> "GenerationRequest":
    """The request with each unit's model name replaced by that ControlNet's file in the library."""
    if not request.controlnets:
        return request
    available = list(catalog())
    units = []
    for i, unit in enumerate(request.controlnets):
        wanted = unit.model.strip()
        bare = wanted.split(" [", 1)[0].strip()
        match = next((m for m in available if m.name in (wanted, bare)), None)
        if match is None:
            folded = [m for m in available if m.name.lower() == bare.lower()]
            match = folded[0] if len(folded) == 1 else None
        if match is None:
            names = ", ".join(model_title(m) for m in available) or "none (put ControlNets in models/ControlNet)"
            field = f"{ARGS_FIELD}[{i}].model"
            raise ApiError(422, f"{field}: unknown ControlNet {wanted!r}; available: {names}", field)
        units.append(replace(unit, model=match.ref))
    return request.replace(controlnets=tuple(units))


# -- the routes ---------------------------------------------------------------------------------


def _modules(alias_names: bool, networks: Sequence[str] = ()) -> tuple[list[str], dict[str, Any]]:
    from heyim_desktop.core.control_preprocess import NETWORK_SPECS, PREPROCESSORS

    names, detail = [], {}
    for p in [*PREPROCESSORS.values(), *(NETWORK_SPECS[n] for n in networks)]:
        key = p.label if alias_names else p.name
        sliders = []
        if p.uses_resolution:
            sliders.append({"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8})
        for s in (p.slider_a, p.slider_b):
            if s is not None:
                sliders.append({"name": s.label, "value": s.default, "min": s.minimum, "max": s.maximum, "step": s.step})
        names.append(key)
        detail[key] = {"model_free": p.name in PREPROCESSORS, "sliders": sliders}
    return names, detail


def _control_types(models: Sequence["ModelInfo"], networks: Sequence[str] = ()) -> dict[str, Any]:
    from heyim_desktop.core.control_preprocess import NETWORK_SPECS, PREPROCESSORS

    titles = [model_title(m) for m in models]
    offered = [*PREPROCESSORS.values(), *(NETWORK_SPECS[n] for n in networks)]
    tags: dict[str, list[str]] = {"All": [p.name for p in offered]}
    for p in offered:
        if p.control_type != "All":
            tags.setdefault(p.control_type, []).append(p.name)
    out = {}
    for tag, modules in tags.items():
        if tag == "All":
            model_list = ["None", *titles]
        elif tag == "T2I-Adapter":  # the library knows which are adapters, whatever their names
            model_list = ["None", *(t for t, m in zip(titles, models) if m.kind == "t2i-adapter")]
        else:
            model_list = ["None", *(t for t in titles if tag.lower() in t.lower())]
        default_module = modules[0] if tag != "All" else "none"
        out[tag] = {"module_list": modules if tag == "All" else ["none", *modules], "model_list": model_list,
                    "default_option": default_module, "default_model": model_list[1] if len(model_list) > 1 else "None"}
    return {"control_types": out}


def _detect(body: Any, budget: Any = None, lookup: AnnotatorLookup | None = None) -> dict[str, Any]:
    """The maps of ``/controlnet/detect``; the images' pixels are held in ``budget`` (the server's
    :class:`~heyim_desktop.api.limits.PixelBudget`) while they are decoded and processed."""
    import contextlib

    from heyim_desktop.api.limits import image_bytes, image_size

    if not isinstance(body, Mapping):
        raise ApiError(422, "the request body must be a JSON object", "body")
    pixels = 0
    for key in ("controlnet_input_images", "controlnet_masks"):
        found = body.get(key)
        if isinstance(found, list):
            for i, data in enumerate(found):
                if isinstance(data, str):
                    width, height = image_size(image_bytes(data, f"{key}[{i}]"), f"{key}[{i}]")
                    pixels += width * height
    with budget.hold(pixels, "controlnet_input_images") if budget is not None else contextlib.nullcontext():
        return _detect_images(body, lookup or library_annotator)


def _detect_images(body: Any, lookup: AnnotatorLookup = library_annotator) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.codec import decode_image, encode_image
    from heyim_desktop.core.control_preprocess import LAMA, NETWORK_SPECS, canonical, detect, network_hint, spec
    from heyim_desktop.core.errors import InvalidRequest, ModelError
    from heyim_desktop.core.masking import mask_to_array

    if not isinstance(body, Mapping):
        raise ApiError(422, "the request body must be a JSON object", "body")
    module = body.get("controlnet_module", "none")
    if not isinstance(module, str):
        raise ApiError(422, "controlnet_module: must be text", "controlnet_module")
    try:
        name = canonical(module)
    except InvalidRequest as exc:
        raise ApiError(422, f"controlnet_module: {exc.detail}", "controlnet_module") from None
    annotator: Path | None = None
    if name in NETWORK_SPECS:
        annotator = lookup(name)
        if annotator is None:
            raise ApiError(422, f"controlnet_module: {network_hint(name)}", "controlnet_module")
    images = body.get("controlnet_input_images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ApiError(422, "controlnet_input_images: must be a list of base64 images", "controlnet_input_images")
    if not images:
        raise ApiError(422, "controlnet_input_images: No image selected", "controlnet_input_images")
    masks = body.get("controlnet_masks", []) or []
    if spec(name).needs_mask and len(masks) != len(images):
        raise ApiError(422, f"controlnet_masks: Preprocessor {module} requires `controlnet_masks` param.",
                       "controlnet_masks")
    numbers = {}
    for key, default in (("controlnet_processor_res", -1), ("controlnet_threshold_a", -1), ("controlnet_threshold_b", -1)):
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(422, f"{key}: must be a number", key)
        numbers[key] = value
    out = []
    for i, data in enumerate(images):
        try:
            image = decode_image(data, field=f"controlnet_input_images[{i}]")
            fill = None
            if name == LAMA:  # the map shown is LaMa's fill of the mask, as the extension shows it
                drawn = decode_image(masks[i], field=f"controlnet_masks[{i}]", mask=True)
                fill = mask_to_array(drawn.resize(image.size))
            result = detect(image, name, processor_res=int(numbers["controlnet_processor_res"]),
                            threshold_a=float(numbers["controlnet_threshold_a"]),
                            threshold_b=float(numbers["controlnet_threshold_b"]), annotator=annotator or "", mask=fill)
            if spec(name).needs_mask and fill is None:
                mask = decode_image(masks[i], field=f"controlnet_masks[{i}]", mask=True)
                arr = np.asarray(result.convert("RGB")).copy()
                arr[mask_to_array(mask.resize(result.size)) > 0.5] = 0  # shown black: the ControlNet sees -1
                result = Image.fromarray(arr)
        except InvalidRequest as exc:
            raise ApiError(422, f"{exc.field}: {exc.detail}", exc.field) from None
        except ModelError as exc:
            raise ApiError(422, f"controlnet_module: {exc}", "controlnet_module") from None
        out.append(encode_image(result))
    return {"images": out, "info": "Success"}


def _detect_doc() -> dict[str, Any]:
    from pydantic import BaseModel, Field

    class DetectBody(BaseModel):
        controlnet_module: str = Field("none", description="a preprocessor from /controlnet/module_list")
        controlnet_input_images: list[str] = Field(default_factory=list, description="base64 images")
        controlnet_processor_res: int = -1
        controlnet_threshold_a: float = -1
        controlnet_threshold_b: float = -1
        controlnet_masks: list[str] = Field(default_factory=list, description="base64 masks (inpaint)")

    schema = DetectBody.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_controlnet_routes(app: "FastAPI", ctx: "ApiContext", errors: dict[int | str, dict[str, Any]]) -> None:
    """The extension's read-only routes and /controlnet/detect on ``app``."""
    import anyio

    from heyim_desktop.api.app import _json_body

    def catalog() -> Sequence["ModelInfo"]:
        return _catalog(ctx)()

    @app.get("/controlnet/version", responses=errors, summary="The ControlNet extension API version HeyIm speaks")
    async def controlnet_version() -> dict[str, Any]:
        return {"version": API_VERSION}

    @app.get("/controlnet/model_list", responses=errors, summary="ControlNets in the model library")
    async def controlnet_model_list(update: bool = True) -> dict[str, Any]:
        models = await anyio.to_thread.run_sync(catalog)
        titles = await anyio.to_thread.run_sync(lambda: [model_title(m) for m in models])
        return {"model_list": titles}

    @app.get("/controlnet/module_list", responses=errors, summary="Preprocessors (modules) and their sliders")
    async def controlnet_module_list(alias_names: bool = False) -> dict[str, Any]:
        networks = await anyio.to_thread.run_sync(_available_networks, _annotators(ctx))
        names, detail = _modules(alias_names, networks)
        return {"module_list": names, "module_detail": detail}

    @app.get("/controlnet/control_types", responses=errors, summary="Preprocessors and ControlNets by control type")
    async def controlnet_control_types() -> dict[str, Any]:
        models = await anyio.to_thread.run_sync(catalog)
        networks = await anyio.to_thread.run_sync(_available_networks, _annotators(ctx))
        return await anyio.to_thread.run_sync(_control_types, models, networks)

    @app.post("/controlnet/detect", responses=errors, openapi_extra=_detect_doc(),
              summary="Run a preprocessor on images; returns the maps")
    async def controlnet_detect(request: Request) -> Response:
        body = await _json_body(request)
        return JSONResponse(await anyio.to_thread.run_sync(_detect, body, ctx.pixels, _annotators(ctx)))
