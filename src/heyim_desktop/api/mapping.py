"""Request bodies of both API dialects mapped onto GenerationRequest fields.

HeyIm's original `/api/generate` is strict: an unknown field is an error. The
AUTOMATIC1111 routes accept every field AUTOMATIC1111 accepts; a field HeyIm cannot honour
is refused when it asks for something (``enable_hr: true``) and ignored with a note when
it is only a default a client always sends. Values are then checked by
``core.codec.request_from_data`` and errors name the client's own field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from heyim_desktop.core.codec import request_from_data
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.request import COUNT_RANGE, GenerationRequest
from heyim_desktop.core.schedulers import canonical_name

if TYPE_CHECKING:
    from heyim_desktop.store.styles import StyleBook


class ApiError(Exception):
    """An answer other than 200: ``status``, a one-line message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Mapped:
    data: dict[str, Any]
    #: Our field name -> the client's, for error messages.
    names: dict[str, str]
    model: str | None = None
    model_field: str = "model"
    #: The refiner the client named (resolved like ``model``), and its field.
    refiner: str | None = None
    refiner_field: str = "refiner"
    notes: tuple[str, ...] = ()
    send_images: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)
    #: Prompt styles to expand into the prompts when the request is built (names, in order).
    styles: tuple[str, ...] = ()


def invalid(names: Mapping[str, str], exc: InvalidRequest) -> ApiError:
    client = names.get(exc.field, exc.field)
    return ApiError(422, f"{client}: {exc.detail}", client)


def build_request(mapped: Mapped, model_ref: str | None, styles: "StyleBook | None" = None, *,
                  init_image: Any = None) -> GenerationRequest:
    """The request, with the prompt styles expanded (reads the styles file: not on the event loop).

    ``init_image`` is an input image already decoded (used instead of the base64 field).
    """
    data = dict(mapped.data)
    if model_ref is not None:
        data["model"] = model_ref
    try:
        if mapped.styles:
            if styles is None:
                raise InvalidRequest("styles", "prompt styles are not available here")
            prompt = data.get("prompt", "")
            negative = data.get("negative_prompt", mapped.defaults.get("negative_prompt", ""))
            if isinstance(prompt, str) and isinstance(negative, str):
                data["prompt"], data["negative_prompt"] = styles.expand(prompt, negative, mapped.styles)
            data["styles"] = list(mapped.styles)
        return request_from_data(data, defaults=mapped.defaults, init_image=init_image)
    except InvalidRequest as exc:
        raise invalid(mapped.names, exc) from None


def _require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ApiError(422, "the request body must be a JSON object", "body")
    return body


def _seed(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"{name}: must be a whole number (-1 for random), got {type(value).__name__}", name)
    if value == -1:
        return None
    return value  # range checked by GenerationRequest


def _style_names(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, f"{name}: must be a list of style names (GET /sdapi/v1/prompt-styles)", name)
    # AUTOMATIC1111's UI sends "None" for no style; empty names mean nothing either.
    return tuple(v for v in value if v.strip() and v != "None")


def _clip_skip(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ApiError(422, f"{name}: must be a whole number from 1 to 12, got {value!r}", name)
    return int(value)


def _string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{name}: must be text, got {type(value).__name__}", name)
    return value


# -- HeyIm's original dialect ----------------------------------------------------------------
_HEYIM_FIELDS = {
    "prompt": "prompt",
    "negativePrompt": "negative_prompt",
    "steps": "steps",
    "cfgScale": "guidance",
    "cfg": "guidance",
    "width": "width",
    "height": "height",
    "scheduler": "scheduler",
    "strength": "strength",
    "inputImage": "init_image",
    "maskImage": "mask_image",
    "guidanceBoost": "guidance_boost",
    "count": "count",
    "refinerSwitch": "refiner_switch",
    "clipSkip": "clip_skip",
}
_HEYIM_EXTRA = ("seed", "model", "modelType", "styles", "refiner")


def parse_heyim(body: Any) -> Mapped:
    body = _require_object(body)
    allowed = sorted([*_HEYIM_FIELDS, *_HEYIM_EXTRA])
    for key in body:
        if key not in _HEYIM_FIELDS and key not in _HEYIM_EXTRA:
            raise ApiError(422, f"{key}: unknown field; allowed: {', '.join(allowed)}", key)
    if "cfg" in body and "cfgScale" in body:
        raise ApiError(422, "cfg: give cfgScale or cfg, not both", "cfg")
    data: dict[str, Any] = {}
    names: dict[str, str] = {"size": "width"}
    for key, ours in _HEYIM_FIELDS.items():
        if key in body and body[key] is not None:
            data[ours] = body[key]
            names[ours] = key
    data["seed"] = _seed(body.get("seed"), "seed")
    if "mask_image" in data:
        data["inpaint"] = {"mask": data.pop("mask_image")}
        names["mask"] = "maskImage"
        names["inpaint.mask"] = "maskImage"
    notes = ("modelType is ignored: pick a model with the model field",) if body.get("modelType") is not None else ()
    names["refiner"] = "refiner"
    return Mapped(data=data, names=names, model=_string(body, "model"), notes=notes,
                  styles=_style_names(body.get("styles"), "styles"), refiner=_string(body, "refiner"))


# -- AUTOMATIC1111's dialect --------------------------------------------------------------------
#: Fields AUTOMATIC1111 accepts that ask for a feature HeyIm lacks: allowed only at these values.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "restore_faces": (False, None),
    "tiling": (False, None),
    "script_name": (None, ""),
    "subseed_strength": (0, 0.0, None),
    "latent_mask": (None, ""),
}
#: Fields AUTOMATIC1111 accepts that do not change what HeyIm makes (or have no equivalent).
_IGNORED = frozenset({
    "sampler_index", "save_images", "do_not_save_samples", "do_not_save_grid", "styles", "subseed",
    "seed_resize_from_h", "seed_resize_from_w", "eta", "s_churn", "s_tmax", "s_tmin", "s_noise",
    "s_min_uncond", "override_settings_restore_afterwards", "script_args", "denoising_strength",
    "enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
    "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler",
    "hr_prompt", "hr_negative_prompt", "hr_cfg", "hr_distilled_cfg", "hr_additional_modules",
    "disable_extra_networks", "firstpass_image", "comments", "force_task_id",
    "infotext", "user", "clip_skip", "resize_mode", "image_cfg_scale", "mask_blur", "mask_blur_x",
    "mask_blur_y", "mask_round", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
    "inpainting_mask_invert", "initial_noise_multiplier", "include_init_images", "send_images",
    "batch_size", "n_iter", "seed", "sampler_name", "scheduler", "override_settings", "init_images",
    "distilled_cfg_scale", "outpath_samples", "outpath_grids",
})
_A1111_FIELDS = {
    "refiner_switch_at": "refiner_switch",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "steps",
    "cfg_scale": "guidance",
    "width": "width",
    "height": "height",
}
#: AUTOMATIC1111's own defaults where they differ from HeyIm's.
A1111_DEFAULTS: dict[str, Any] = {"steps": 50, "guidance": 7.0, "width": 512, "height": 512}
_NEUTRAL_SCHEDULES = {"automatic", "uniform", "normal", "default", ""}


def _sampler(body: Mapping[str, Any]) -> str | None:
    name = _string(body, "sampler_name") or _string(body, "sampler_index")
    field_name = "sampler_name" if body.get("sampler_name") else "sampler_index"
    schedule = _string(body, "scheduler")
    if name:
        try:
            name = canonical_name(name)
        except InvalidRequest as exc:
            raise ApiError(422, f"{field_name}: {exc.detail}", field_name) from None
    if schedule is None or schedule.strip().lower() in _NEUTRAL_SCHEDULES:
        return name or "Euler"  # AUTOMATIC1111's API default
    if schedule.strip().lower() == "karras":
        base = name or "DPM++ 2M"
        if "karras" in base.lower():
            return base
        try:
            return canonical_name(f"{base} Karras")
        except InvalidRequest:
            raise ApiError(422, f"scheduler: Karras is available with DPM++ 2M only, not {base}", "scheduler") from None
    raise ApiError(422, f"scheduler: {schedule!r} is not supported; use Automatic or Karras", "scheduler")


def _count(body: Mapping[str, Any]) -> int:
    values = {}
    for key in ("batch_size", "n_iter"):
        value = body.get(key, 1)
        if value is None:
            value = 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(422, f"{key}: must be a whole number of at least 1, got {value!r}", key)
        values[key] = value
    count = values["batch_size"] * values["n_iter"]
    if count > COUNT_RANGE[1]:
        raise ApiError(422, f"batch_size: batch_size x n_iter must be at most {COUNT_RANGE[1]}, got {count}", "batch_size")
    return count


#: AUTOMATIC1111's ``inpainting_fill`` numbers, in its order.
_FILL_BY_NUMBER = ("fill", "original", "latent noise", "latent nothing")


def _a1111_int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"{name}: must be a whole number, got {type(value).__name__}", name)
    return value


def a1111_inpaint(body: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """AUTOMATIC1111's img2img mask fields as HeyIm's inpainting settings (None without a mask)."""
    mask = body.get("mask")
    if mask is None or mask == "":
        return None
    if not isinstance(mask, str):
        raise ApiError(422, "mask: must be a base64 image", "mask")
    fill = _a1111_int(body, "inpainting_fill", 0)
    if not 0 <= fill < len(_FILL_BY_NUMBER):
        raise ApiError(422, f"inpainting_fill: must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing), got {fill}",
                       "inpainting_fill")
    blur = _a1111_int(body, "mask_blur", 4)
    for axis in ("mask_blur_x", "mask_blur_y"):
        if body.get(axis) not in (None, blur, 4):
            notes.append(f"{axis} is not supported separately; mask_blur {blur} is used for both axes")
    noise = body.get("initial_noise_multiplier")
    if noise not in (None, 1, 1.0):
        notes.append("initial_noise_multiplier is ignored (HeyIm always uses 1)")
    # AUTOMATIC1111's API defaults (its img2img processing class), not its web UI's:
    # "Only masked" with no padding unless the client says otherwise.
    full_res = body.get("inpaint_full_res", True)
    return {
        "mask": mask,
        "mask_blur": blur,
        "fill": _FILL_BY_NUMBER[fill],
        "only_masked": True if full_res is None else bool(full_res),
        "padding": _a1111_int(body, "inpaint_full_res_padding", 0),
        "invert": bool(body.get("inpainting_mask_invert", 0)),
    }


def parse_a1111(body: Any, *, img2img: bool, clip_skip: int = 1) -> Mapped:
    """``clip_skip`` is the server's CLIP_stop_at_last_layers, used when the request sets none."""
    body = _require_object(body)
    notes: list[str] = []
    for key, allowed in _UNSUPPORTED.items():
        if key in body and body[key] not in allowed:
            raise ApiError(422, f"{key}: not supported by HeyIm (send {allowed[0]!r} or leave it out)", key)
    unknown = sorted(k for k in body if k not in _A1111_FIELDS and k not in _IGNORED and k not in _UNSUPPORTED
                     and k != "alwayson_scripts")
    if unknown:
        notes.append(f"ignored unknown fields: {', '.join(unknown)}")
    data: dict[str, Any] = {}
    names = {ours: key for key, ours in _A1111_FIELDS.items()}
    names.update({"count": "batch_size", "scheduler": "sampler_name", "seed": "seed", "size": "width",
                  "strength": "denoising_strength", "init_image": "init_images", "refiner": "refiner_checkpoint"})
    for key, ours in _A1111_FIELDS.items():
        if body.get(key) is not None:
            data[ours] = body[key]
    data["seed"] = _seed(body.get("seed", -1), "seed")
    sampler = _sampler(body)
    schedule = _string(body, "scheduler")
    sampler_given = bool(_string(body, "sampler_name") or _string(body, "sampler_index")) or (
        schedule is not None and schedule.strip().lower() not in _NEUTRAL_SCHEDULES)
    if sampler_given:  # else AUTOMATIC1111's default, in ``defaults``: a model's recommended one may replace it
        data["scheduler"] = sampler
    data["count"] = _count(body)
    names["clip_skip"] = "clip_skip"
    skip = _clip_skip(body.get("clip_skip"), "clip_skip")
    model = None
    overrides = body.get("override_settings")
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise ApiError(422, "override_settings: must be an object", "override_settings")
        model = overrides.get("sd_model_checkpoint")
        if model is not None and not isinstance(model, str):
            raise ApiError(422, "override_settings.sd_model_checkpoint: must be text", "override_settings.sd_model_checkpoint")
        if "CLIP_stop_at_last_layers" in overrides and skip is None:
            skip = _clip_skip(overrides["CLIP_stop_at_last_layers"], "override_settings.CLIP_stop_at_last_layers")
            names["clip_skip"] = "override_settings.CLIP_stop_at_last_layers"
        others = sorted(k for k in overrides if k not in ("sd_model_checkpoint", "CLIP_stop_at_last_layers"))
        if others:
            notes.append(f"override_settings ignored (HeyIm requests carry their own settings): {', '.join(others)}")
    if img2img:
        images = body.get("init_images")
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise ApiError(422, "init_images: must be a list of at least one base64 image", "init_images")
        empty = next((i for i, image in enumerate(images) if not image.strip()), None)
        if empty is not None:
            raise ApiError(422, f"init_images[{empty}]: is empty; send a base64 image", "init_images")
        if len(images) > 1:
            notes.append("only the first of init_images is used")
        data["init_image"] = images[0]
        strength = body.get("denoising_strength", 0.75)
        data["strength"] = 0.75 if strength is None else strength
        data["guidance_boost"] = 0.0  # AUTOMATIC1111 clients mean cfg_scale as given
        inpaint = a1111_inpaint(body, notes)
        if inpaint is not None:
            data["inpaint"] = inpaint
            names.update({"inpaint.mask_blur": "mask_blur", "inpaint.fill": "inpainting_fill", "mask": "mask",
                          "inpaint.padding": "inpaint_full_res_padding", "mask_blur": "mask_blur",
                          "inpainting_fill": "inpainting_fill", "inpaint_padding": "inpaint_full_res_padding"})
    elif body.get("mask"):
        raise ApiError(422, "mask: inpainting needs an input image; use /sdapi/v1/img2img", "mask")
    elif body.get("init_images"):
        notes.append("init_images is ignored by txt2img (use /sdapi/v1/img2img)")
    data["clip_skip"] = clip_skip if skip is None else skip
    if not img2img:  # hires fix: enable_hr, hr_* and denoising_strength (api/upscale_routes.py)
        from heyim_desktop.api.upscale_routes import HIRES_NAMES, a1111_hires

        hires = a1111_hires(body)
        if hires is not None:
            data["hires"] = hires
            names.update(HIRES_NAMES)
    from heyim_desktop.api.controlnet_routes import parse_units, unit_names

    units = parse_units(body.get("alwayson_scripts"), notes)  # only the ControlNet script is accepted
    if units:
        data["controlnet"] = units
        names.update(unit_names(len(units)))
    send = body.get("send_images", True)
    refiner = _string(body, "refiner_checkpoint") or None
    if refiner is None and body.get("refiner_switch_at") is not None:
        notes.append("refiner_switch_at is ignored without refiner_checkpoint")
        data.pop("refiner_switch", None)
    return Mapped(
        data=data, names=names, model=model, model_field="override_settings.sd_model_checkpoint",
        notes=tuple(notes), send_images=send is not False,
        defaults={**A1111_DEFAULTS, **({} if sampler_given else {"scheduler": sampler})},
        refiner=refiner, refiner_field="refiner_checkpoint",
        styles=_style_names(body.get("styles"), "styles"),
    )
