"""AUTOMATIC1111's upscaling routes (Extras) and the hires fix fields of txt2img.

``POST /sdapi/v1/extra-single-image`` and ``/extra-batch-images`` submit upscale jobs to the
shared queue (the worker runs them between generations, without touching the loaded model) and
answer with AUTOMATIC1111's shapes; ``GET /sdapi/v1/upscalers`` and ``/latent-upscale-modes``
list what may be named. Upscaler names from a client are looked up in the model library; a
client never gives a path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from heyim_desktop.api.mapping import ApiError
from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.core.jobs import Job, JobState, QueueClosed
from heyim_desktop.core.upscale import BUILTIN_UPSCALERS, LATENT_MODES

if TYPE_CHECKING:
    from PIL import Image

    from heyim_desktop.api.context import ApiContext
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models.library import ModelLibrary

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.5
MAX_BATCH_IMAGES = 16
#: AUTOMATIC1111's names for "no upscale" (upscaler_1) and for the txt2img hires defaults.
NONE = "None"
#: Our hires field -> the client's, for error messages.
HIRES_NAMES = {"hires_scale": "hr_scale", "hires_upscaler": "hr_upscaler", "hires_steps": "hr_second_pass_steps",
               "hires_resize_x": "hr_resize_x", "hires_resize_y": "hr_resize_y",
               "denoising_strength": "denoising_strength", "hires": "enable_hr"}


# -- schemas (describe the routes in /openapi.json; bodies are checked by the code below) -------------
class ExtrasBase(BaseModel):
    model_config = ConfigDict(extra="allow")
    resize_mode: int = Field(default=0, ge=0, le=1, description="0: by upscaling_resize; 1: to upscaling_resize_w x _h.")
    show_extras_results: bool = True
    upscaling_resize: float = Field(default=2, gt=0, le=8)
    upscaling_resize_w: int = Field(default=512, ge=1, le=8192)
    upscaling_resize_h: int = Field(default=512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = Field(default=NONE, description="A name from GET /sdapi/v1/upscalers.")
    upscaler_2: str = Field(default=NONE, description="Blended over upscaler_1 by extras_upscaler_2_visibility.")
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1)
    gfpgan_visibility: float = Field(default=0, ge=0, le=0, description="Face restoration is not supported: 0 only.")
    codeformer_visibility: float = Field(default=0, ge=0, le=0, description="Face restoration is not supported: 0 only.")


class ExtrasSingleImageRequest(ExtrasBase):
    image: str = Field(description="Base64 (or data URL) image.")


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchImagesRequest(ExtrasBase):
    imageList: list[FileData] = Field(min_length=1, max_length=MAX_BATCH_IMAGES)


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str]


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


# -- names ----------------------------------------------------------------------------------------
def _library(ctx: "ApiContext") -> "ModelLibrary":
    library = getattr(ctx, "upscaler_library", None)
    if library is None:
        from heyim_desktop.models.library import ModelLibrary
        from heyim_desktop.store.preferences import load_preferences

        library = ModelLibrary(load_preferences().model_folders, include_demo=False, hf_cache=False)
        ctx.upscaler_library = library  # type: ignore[attr-defined]
    return library


def upscaler_items(library: "ModelLibrary") -> list[dict[str, Any]]:
    items = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
             for name in (NONE, *BUILTIN_UPSCALERS)]
    for info in library.list_upscalers():
        if info.ready:
            items.append({"name": info.name, "model_name": info.name, "model_path": info.ref, "model_url": None,
                          "scale": info.scale or None})
    return items


def resolve_hires_request(ctx: "ApiContext", request: "GenerationRequest") -> "GenerationRequest":
    """A txt2img request's hires upscaler name resolved through the library (422 for unknown names)."""
    if request.hires is None:
        return request
    from heyim_desktop.models.upscalers import resolve_hires

    try:
        return request.replace(hires=resolve_hires(_library(ctx), request.hires))
    except InvalidRequest as exc:
        raise ApiError(422, f"hr_upscaler: {exc.detail}", "hr_upscaler") from None


def a1111_hires(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``hires`` settings of an AUTOMATIC1111 txt2img body (None unless ``enable_hr``)."""
    enable = body.get("enable_hr")
    if enable is None or enable is False:
        return None
    if enable is not True:
        raise ApiError(422, "enable_hr: must be true or false", "enable_hr")
    hires: dict[str, Any] = {}
    for ours, theirs, default in (("scale", "hr_scale", 2.0), ("steps", "hr_second_pass_steps", 0),
                                  ("resize_x", "hr_resize_x", 0), ("resize_y", "hr_resize_y", 0),
                                  ("denoising_strength", "denoising_strength", 0.75)):
        value = body.get(theirs)
        hires[ours] = default if value is None else value
    upscaler = body.get("hr_upscaler")
    if upscaler is not None and not isinstance(upscaler, str):
        raise ApiError(422, "hr_upscaler: must be text", "hr_upscaler")
    hires["upscaler"] = "Latent" if upscaler in (None, "", NONE) else upscaler
    return hires


# -- the extras routes ---------------------------------------------------------------------------
def _number(body: Mapping[str, Any], key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ApiError(422, f"{key}: must be a number, got {type(value).__name__}", key)
    return value


def _plan(ctx: "ApiContext", body: Any) -> dict[str, Any]:
    """Checked settings of an Extras body (everything but the images)."""
    from heyim_desktop.models.upscalers import resolve_upscaler

    if not isinstance(body, Mapping):
        raise ApiError(422, "the request body must be a JSON object", "body")
    for key in ("gfpgan_visibility", "codeformer_visibility"):
        if _number(body, key, 0, (int, float)) != 0:
            raise ApiError(422, f"{key}: face restoration is not supported by HeyIm (send 0)", key)
    mode = _number(body, "resize_mode", 0, int)
    if mode not in (0, 1):
        raise ApiError(422, "resize_mode: must be 0 (by a factor) or 1 (to a size)", "resize_mode")
    plan: dict[str, Any] = {"mode": mode, "crop": body.get("upscaling_crop", True) is not False}
    plan["scale"] = float(_number(body, "upscaling_resize", 2, (int, float)))
    if mode == 0 and not 0 < plan["scale"] <= 8:
        raise ApiError(422, f"upscaling_resize: must be more than 0 and at most 8, got {plan['scale']:g}", "upscaling_resize")
    plan["w"] = _number(body, "upscaling_resize_w", 512, int)
    plan["h"] = _number(body, "upscaling_resize_h", 512, int)
    for key in ("w", "h"):
        if not 1 <= plan[key] <= 8192:
            field = f"upscaling_resize_{key}"
            raise ApiError(422, f"{field}: must be from 1 to 8192", field)
    visibility = float(_number(body, "extras_upscaler_2_visibility", 0, (int, float)))
    if not 0 <= visibility <= 1:
        raise ApiError(422, "extras_upscaler_2_visibility: must be from 0 to 1", "extras_upscaler_2_visibility")
    plan["visibility"] = visibility
    library = _library(ctx)
    for key in ("upscaler_1", "upscaler_2"):
        name = body.get(key, NONE)
        if name is None or name == NONE or (key == "upscaler_2" and visibility == 0):
            plan[key] = None
            continue
        if not isinstance(name, str):
            raise ApiError(422, f"{key}: must be text", key)
        try:
            plan[key] = resolve_upscaler(library, name)
        except InvalidRequest as exc:
            raise ApiError(422, f"{key}: {exc.detail.replace('Lanczos', 'None, Lanczos', 1)}", key) from None
    return plan


def _factor(plan: dict[str, Any], image: "Image.Image") -> tuple[float, tuple[int, int] | None]:
    """AUTOMATIC1111's upscale factor and, with crop, the exact size to cut the result to."""
    if plan["mode"] == 0:
        return plan["scale"], None
    factor = max(plan["w"] / image.width, plan["h"] / image.height)
    return factor, ((plan["w"], plan["h"]) if plan["crop"] else None)


def _upscale_requests(plan: dict[str, Any], image: "Image.Image", name: str) -> list[Any]:
    """One UpscaleRequest per upscaler in use (upscaler_2 is blended in afterwards)."""
    from heyim_desktop.core.upscale import target_size
    from heyim_desktop.core.upscale_job import UpscaleRequest

    factor, _crop = _factor(plan, image)
    try:
        size = target_size(image.width, image.height, factor)
        out: list[UpscaleRequest | None] = []
        for key in ("upscaler_1", "upscaler_2"):
            chosen = plan[key]
            if chosen is None:
                if key == "upscaler_1":
                    out.append(None)
                continue
            upscaler, path = chosen
            out.append(UpscaleRequest(image=image, scale=max(1.0, min(8.0, factor)), size=size, upscaler=upscaler,
                                      upscaler_path=path, source_settings={"prompt": f"Upscale of {name}"}))
        return out
    except InvalidRequest as exc:
        field = "upscaling_resize" if plan["mode"] == 0 else "upscaling_resize_w"
        raise ApiError(422, f"{field}: {exc.detail}", field) from None


async def _wait(ctx: "ApiContext", request: Request, job: Job) -> Job:
    ctx.waiting.add(job.id)
    try:
        while not await anyio.to_thread.run_sync(job.wait, DISCONNECT_POLL_S):
            if ctx.stopping.is_set():
                raise ApiError(503, "the API server is stopping; the job was cancelled")
            if await request.is_disconnected():
                ctx.queue.cancel(job.id)
    finally:
        ctx.waiting.discard(job.id)
        if not job.state.finished:
            ctx.queue.cancel(job.id)
    return job


async def _run(ctx: "ApiContext", request: Request, upscale: Any) -> "Image.Image":
    try:
        job = ctx.queue.submit(upscale, source="api")
    except QueueClosed:
        raise ApiError(503, "the server is shutting down") from None
    except UserFacingError as exc:
        raise ApiError(503, str(exc)) from None
    await _wait(ctx, request, job)
    if job.state is JobState.CANCELLED:
        raise ApiError(409, "the upscale was cancelled")
    if job.state is JobState.FAILED or job.result is None:
        from heyim_desktop.api.results import failure

        raise failure(job, {"upscaler": "upscaler_1", "scale": "upscaling_resize", "init_image": "image"})
    return job.result.images[0].image


async def _process(ctx: "ApiContext", request: Request, plan: dict[str, Any], image: "Image.Image", name: str) -> str:
    from PIL import Image as PILImage

    from heyim_desktop.api.results import png_base64
    from heyim_desktop.core.metadata import postprocess_parameters

    jobs = await anyio.to_thread.run_sync(_upscale_requests, plan, image, name)
    factor, crop = _factor(plan, image)
    first = jobs[0]
    if first is None:  # upscaler_1 "None": a plain resize, as AUTOMATIC1111 does with no upscaler
        from heyim_desktop.core.upscale import LANCZOS, resize_builtin, target_size

        result = resize_builtin(image, target_size(image.width, image.height, factor), LANCZOS) if factor != 1 else image
        label = NONE
    else:
        result = await _run(ctx, request, first)
        label = first.upscaler
        if len(jobs) > 1:
            second = await _run(ctx, request, jobs[1])
            result = PILImage.blend(result.convert("RGB"), second.convert("RGB").resize(result.size), plan["visibility"])
    if crop is not None and result.size != crop:
        left, top = (result.width - crop[0]) // 2, (result.height - crop[1]) // 2
        result = result.crop((left, top, left + crop[0], top + crop[1]))
    text = postprocess_parameters(None, round(factor, 4), label)
    return await anyio.to_thread.run_sync(png_base64, result, text)


def _decode(data: Any, field: str) -> "Image.Image":
    from heyim_desktop.core.codec import decode_image

    if not isinstance(data, str) or not data:
        raise ApiError(422, f"{field}: must be a base64 image", field)
    try:
        return decode_image(data, field)  # type: ignore[no-any-return]
    except InvalidRequest as exc:
        raise ApiError(422, str(exc), field) from None


def register_upscale_routes(app: FastAPI, ctx: "ApiContext", errors: dict[int | str, dict[str, Any]],
                            job_errors: dict[int | str, dict[str, Any]]) -> None:
    def body_doc(model: type[BaseModel]) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}

    async def json_body(request: Request) -> Any:
        from heyim_desktop.api.app import _json_body

        return await _json_body(request)

    # GET /sdapi/v1/upscalers and /latent-upscale-modes are a1111_routes' lists: fill them here.
    ctx.upscalers = lambda: upscaler_items(_library(ctx))
    ctx.latent_upscale_modes = lambda: [{"name": name} for name in LATENT_MODES]

    @app.post("/sdapi/v1/extra-single-image", response_model=ExtrasSingleImageResponse, responses=job_errors,
              openapi_extra=body_doc(ExtrasSingleImageRequest), summary="Upscale one image (AUTOMATIC1111's Extras)")
    async def extra_single(request: Request) -> Response:
        body = await json_body(request)
        plan = await anyio.to_thread.run_sync(_plan, ctx, body)
        image = await anyio.to_thread.run_sync(_decode, body.get("image"), "image")
        encoded = await _process(ctx, request, plan, image, "image")
        show = body.get("show_extras_results", True) is not False
        return JSONResponse({"html_info": "", "image": encoded if show else None})

    @app.post("/sdapi/v1/extra-batch-images", response_model=ExtrasBatchImagesResponse, responses=job_errors,
              openapi_extra=body_doc(ExtrasBatchImagesRequest), summary="Upscale several images (AUTOMATIC1111's Extras)")
    async def extra_batch(request: Request) -> Response:
        body = await json_body(request)
        plan = await anyio.to_thread.run_sync(_plan, ctx, body)
        files = body.get("imageList")
        if not isinstance(files, list) or not files or len(files) > MAX_BATCH_IMAGES:
            raise ApiError(422, f"imageList: must be a list of 1 to {MAX_BATCH_IMAGES} {{data, name}} objects", "imageList")
        images = []
        for i, item in enumerate(files):
            if not isinstance(item, Mapping):
                raise ApiError(422, f"imageList[{i}]: must be an object with data and name", "imageList")
            raw_name = item.get("name")
            name = raw_name if isinstance(raw_name, str) else f"image {i + 1}"
            images.append((await anyio.to_thread.run_sync(_decode, item.get("data"), "imageList"), name))
        out = [await _process(ctx, request, plan, image, name) for image, name in images]
        show = body.get("show_extras_results", True) is not False
        return JSONResponse({"html_info": "", "images": out if show else []})
