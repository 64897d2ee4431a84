"""The routes: HeyIm's original endpoints and AUTOMATIC1111-compatible ones over one queue.

Routes never run the engine: they submit a job to the shared JobQueue and wait on it, so
requests from the window, the menu bar and any number of HTTP clients run one at a time.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from heyim_desktop import __version__
from heyim_desktop.api import a1111_routes, schemas
from heyim_desktop.api.context import ApiContext
from heyim_desktop.api.limits import decode_fitted, image_bytes, image_size, parse_json, release_memory
from heyim_desktop.api.mapping import ApiError, Mapped, build_request, invalid, parse_a1111, parse_heyim
from heyim_desktop.api.results import (
    a1111_response,
    encode_images,
    failure,
    heyim_response,
    job_seconds,
    progress_payload,
)
from heyim_desktop.api.security import LOCAL_ORIGIN_RE, MAX_BODY_BYTES, Guard
from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.core.jobs import Job, JobState, QueueClosed
from heyim_desktop.core.result import GenerationResult
from heyim_desktop.core.schedulers import SCHEDULER_NAMES

log = logging.getLogger(__name__)

#: How often a waiting request checks whether its client went away (then its job is cancelled).
DISCONNECT_POLL_S = 0.5

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON, or a Host header that is not allowed",
        401: "Missing or wrong token",
        403: "A foreign Origin",
        413: "Body larger than 10 MB",
        415: "A POST that is not application/json",
        422: "A field is invalid (named in `field`)",
    }.items()
}
_GEN_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, **{c: {"model": schemas.ErrorResponse, "description": d} for c, d in {
    409: "Cancelled (HeyIm route)", 500: "A bug (logged)", 503: "Model cannot load, out of memory, or queue full",
    507: "Saving to the history failed"}.items()}}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _error(exc: ApiError) -> JSONResponse:
    # "detail", "body" and "errors" are AUTOMATIC1111's error keys; "success" and "field" HeyIm's.
    return JSONResponse({"success": False, "error": exc.message, "detail": exc.message, "body": "",
                         "errors": exc.message, "field": exc.field}, status_code=exc.status)


async def _json_body(request: Request) -> Any:
    return parse_json(await request.body())


def _control_pixels(data: dict[str, Any], names: dict[str, str]) -> tuple[int, str]:
    """(pixels, field) of the ControlNet units' inline control images, from their headers only."""
    units = data.get("controlnet")
    total, field = 0, names.get("controlnet.image", "controlnet.image")
    if not isinstance(units, list):
        return 0, field
    for unit in units:
        image = unit.get("image") if isinstance(unit, dict) else None
        if isinstance(image, str) and image:
            width, height = image_size(image_bytes(image, field), field)
            total += width * height
    return total, field


def _prepare(ctx: ApiContext, mapped: Mapped) -> tuple[Any, int]:
    """The request checked and its images decoded, with the control images charged; (request, pixels held).

    ControlNet control images count in the server's pixel budget as the input image does:
    their headers are read and charged before anything is decoded, and they stay charged
    while the job holds them (at the size sent: the preprocessor works on the original).
    """
    control, field = _control_pixels(mapped.data, mapped.names)
    ctx.pixels.reserve(control, field)
    try:
        request, held = _prepare_input(ctx, mapped)
    except BaseException:
        ctx.pixels.release(control)
        raise
    return request, held + control


def _prepare_input(ctx: ApiContext, mapped: Mapped) -> tuple[Any, int]:
    """The whole request checked, then its input image decoded and shrunk; (request, pixels held).

    Every field but the inpainting mask is validated first (a 1-pixel stand-in checks the
    image-to-image settings), the images' headers are read and charged to the server's pixel
    budget before anything is decoded, and the input image is shrunk to the request's size at
    once: the queue holds the small version (inpainting "only masked" keeps the whole image, as
    it repaints a crop of it). The caller releases the returned pixels from ``ctx.pixels``.
    """
    from collections.abc import Mapping as MappingABC
    from dataclasses import replace

    from PIL import Image

    from heyim_desktop.core.lora import resolve_networks

    def networks(built: Any) -> Any:
        if built.controlnets:  # ControlNet names -> files of the model library
            from heyim_desktop.api.controlnet_routes import _annotators, _catalog, resolve_annotators, resolve_controlnets

            built = resolve_annotators(resolve_controlnets(built, _catalog(ctx)), _annotators(ctx))
        from heyim_desktop.api.upscale_routes import resolve_hires_request

        built = resolve_hires_request(ctx, built)  # a hires fix upscaler's name -> its model file
        try:
            return resolve_networks(built, ctx.networks)  # <lora:...> tags and embeddings, checked
        except InvalidRequest as exc:
            raise ApiError(422, str(exc), mapped.names.get(exc.field, exc.field)) from None

    ref = ctx.resolve(mapped.model, mapped.model_field)
    refiner = ctx.resolve_refiner(mapped.refiner, mapped.refiner_field)
    if refiner is not None:
        mapped = replace(mapped, data={**mapped.data, "refiner": refiner})
    data = dict(mapped.data)
    encoded = data.pop("init_image", None)
    inpaint = data.pop("inpaint", None)
    stand_in = Image.new("RGB", (1, 1)) if encoded is not None else None
    first = networks(build_request(replace(mapped, data=data), ref, ctx.styles, init_image=stand_in))
    if encoded is None:
        return (networks(build_request(mapped, ref, ctx.styles)) if inpaint is not None else first), 0
    field = mapped.names.get("init_image", "init_image")
    pixels = 0
    if isinstance(inpaint, MappingABC) and isinstance(inpaint.get("mask"), str):
        mask_field = mapped.names.get("inpaint.mask", mapped.names.get("mask", "mask"))
        mask_w, mask_h = image_size(image_bytes(inpaint["mask"], mask_field), mask_field)
        pixels += mask_w * mask_h
    raw = image_bytes(encoded, field)
    width, height = image_size(raw, field)
    pixels += width * height
    only_masked = isinstance(inpaint, MappingABC) and bool(inpaint.get("only_masked"))
    with ctx.pixels.hold(pixels, field):
        image = decode_fitted(raw, field, first.width, first.height, fit=not only_masked)
        del raw
        final = None
        if inpaint is not None:  # built again with the mask; the control images decoded once, in ``first``
            bare = [dict(u, image=None) if isinstance(u, dict) else u for u in data.get("controlnet") or []]
            again = replace(mapped, data={**mapped.data, "controlnet": bare}) if bare else mapped
            final = networks(build_request(again, ref, ctx.styles, init_image=image))
            if bare:
                final = final.replace(controlnets=first.controlnets)
    if pixels > 4 * first.width * first.height:
        release_memory()
    held = image.width * image.height
    ctx.pixels.reserve(held, field)
    if final is not None:
        return final, held
    try:
        return first.replace(init_image=image), held
    except InvalidRequest as exc:
        ctx.pixels.release(held)
        raise invalid(mapped.names, exc) from None


def _recommended(ctx: ApiContext, mapped: Mapped, gen_request: Any) -> tuple[Any, Mapped]:
    """The model's recommended steps, guidance and scheduler where the client sent none; a note says so."""
    from dataclasses import replace

    from heyim_desktop.core.recommended import apply_recommended, recommended_for_path

    ref = gen_request.model or ctx.loaded_ref or ctx.default_model
    choice = ctx.find(ref) if ref else None
    if choice is None or not choice.path:
        return gen_request, mapped
    applied = apply_recommended(
        gen_request, recommended_for_path(choice.path), steps_set="steps" in mapped.data,
        guidance_set="guidance" in mapped.data, scheduler_set=mapped.data.get("scheduler") is not None,
    )
    if applied.note is None:
        return gen_request, mapped
    fallback = {"steps": "steps", "guidance": "cfgScale", "scheduler": "scheduler"}  # HeyIm's names
    fields = ", ".join(mapped.names.get(k, fallback[k]) for k in fallback)
    return applied.request, replace(mapped, notes=(*mapped.notes, f"{applied.note}; send {fields} to choose"))


async def _run_job(ctx: ApiContext, request: Request, mapped: Mapped) -> tuple[Job, Mapped]:
    """Submit the job and wait for it; a client that hangs up cancels its job.

    Returns the job and ``mapped`` with any note added on the way (recommended settings).
    """
    # The model library reads folders and input images are decoded: not on the event loop.
    gen_request, held = await anyio.to_thread.run_sync(_prepare, ctx, mapped)
    try:
        gen_request, mapped = await anyio.to_thread.run_sync(_recommended, ctx, mapped, gen_request)
        return await _submit_and_wait(ctx, request, mapped, gen_request), mapped
    finally:
        ctx.pixels.release(held)


async def _submit_and_wait(ctx: ApiContext, request: Request, mapped: Mapped, gen_request: Any) -> Job:
    try:
        job = ctx.queue.submit(gen_request, source="api")
    except QueueClosed:
        raise ApiError(503, "the server is shutting down") from None
    except UserFacingError as exc:  # the queue is full
        raise ApiError(503, str(exc)) from None
    for note in mapped.notes:
        log.info("api job %s: %s", job.id, note)
    ctx.waiting.add(job.id)
    try:
        while not await anyio.to_thread.run_sync(job.wait, DISCONNECT_POLL_S):
            if ctx.stopping.is_set():  # its job is cancelled; answer now rather than at the next step
                raise ApiError(503, "the API server is stopping; the job was cancelled")
            if await request.is_disconnected():
                log.info("the client of job %s went away; cancelling it", job.id)
                ctx.queue.cancel(job.id)
    finally:
        ctx.waiting.discard(job.id)
        if not job.state.finished:  # the server is stopping: nobody is left to receive the images
            ctx.queue.cancel(job.id)
    return job


def build_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="HeyIm Desktop local API", version=__version__, docs_url=None, redoc_url=None,
                  description="HeyIm's original endpoints and AUTOMATIC1111-compatible ones. Every route except "
                              "/health needs `Authorization: Bearer TOKEN` (the /sdapi routes also accept the token "
                              "as the password of HTTP basic auth).")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        name = str(first.get("loc", ("", "request"))[-1])
        return _error(ApiError(422, f"{name}: {first.get('msg', 'invalid')}", name))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback once.
        return _error(ApiError(500, f"Unexpected error: {type(exc).__name__}: {exc}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(ApiError(exc.status_code, str(exc.detail)))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.get("/health", response_class=PlainTextResponse, summary="Liveness check (no token needed)")
    async def health() -> str:
        return "OK"

    @app.get("/api/status", response_model=schemas.StatusResponse, responses=_ERRORS)
    async def status() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(_status)

    def _status() -> dict[str, Any]:
        queue = ctx.queue
        running = queue.running
        loaded = ctx.loaded_ref
        model_status = "loaded" if loaded else ("loading" if running is not None and running.progress is None else "not_loaded")
        last = queue.last_finished
        return {
            "modelStatus": model_status,
            "currentModel": ctx.name_of(loaded),
            "defaultModel": ctx.name_of(ctx.default_model),
            "isGenerating": running is not None,
            "queueSize": len(queue.pending()),
            "lastGenerationTime": job_seconds(last) if last is not None and last.started else None,
            "version": __version__,
        }

    @app.get("/api/models", response_model=schemas.ModelsResponse, responses=_ERRORS)
    async def models() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(_models)

    def _models() -> dict[str, Any]:
        loaded, default = ctx.loaded_ref, ctx.default_model
        entries = [{"name": c.name, "ref": c.ref, "loaded": c.ref == loaded, "default": c.ref == default, "base": c.base}
                   for c in ctx.models()]
        return {"models": entries, "current": ctx.name_of(loaded)}

    @app.post("/api/generate", response_model=schemas.GenerateResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.GenerateRequest), summary="HeyIm's original generate route")
    async def generate(request: Request) -> Response:
        mapped = parse_heyim(await _json_body(request))
        job, mapped = await _run_job(ctx, request, mapped)
        if job.state is JobState.CANCELLED:
            raise ApiError(409, "the job was cancelled; nothing was saved")
        if job.state is JobState.FAILED:
            raise failure(job, mapped.names)
        assert isinstance(job.result, GenerationResult)
        images, _texts = await anyio.to_thread.run_sync(encode_images, job.result)
        name = await anyio.to_thread.run_sync(ctx.name_of, job.request.model)
        return JSONResponse(heyim_response(job, mapped, images, name))

    async def _a1111(request: Request, img2img: bool) -> Response:
        body = await _json_body(request)
        mapped = parse_a1111(body, img2img=img2img, clip_skip=ctx.clip_skip)
        # Start hashing the model while it generates (info needs its hash; the first time is slow).
        await anyio.to_thread.run_sync(
            lambda: ctx.model_sha256(ctx.resolve(mapped.model, mapped.model_field), wait=False))
        job, mapped = await _run_job(ctx, request, mapped)
        if job.state is JobState.FAILED:
            raise failure(job, mapped.names)

        def finish() -> dict[str, Any]:  # hashing (first time) and PNG encoding: off the event loop
            ref = job.request.model or ctx.loaded_ref or ctx.default_model
            sha = ctx.model_sha256(ref, wait=True)
            short = sha[:10] if sha else None
            images: list[str] = []
            texts: list[str] = []
            if isinstance(job.result, GenerationResult):
                images, texts = encode_images(job.result, short)
            return a1111_response(job, mapped, body, images, texts, ctx.name_of(ref), short, img2img=img2img)

        # An interrupted job answers 200 with what it made, as AUTOMATIC1111 does.
        return JSONResponse(await anyio.to_thread.run_sync(finish))

    @app.post("/sdapi/v1/txt2img", response_model=schemas.ImagesResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.Txt2ImgRequest))
    async def txt2img(request: Request) -> Response:
        return await _a1111(request, img2img=False)

    @app.post("/sdapi/v1/img2img", response_model=schemas.ImagesResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.Img2ImgRequest))
    async def img2img(request: Request) -> Response:
        return await _a1111(request, img2img=True)

    @app.get("/sdapi/v1/sd-models", response_model=list[schemas.SDModelItem], responses=_ERRORS,
             summary="Models, titled 'name [hash]' once hashed (hashing runs in the background, as in AUTOMATIC1111)")
    async def sd_models() -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(_sd_models)

    def _sd_models() -> list[dict[str, Any]]:
        out = []
        for c in ctx.models():
            sha = ctx.model_sha256(c.ref, wait=False)
            short = sha[:10] if sha else None
            path = ctx.model_path(c.ref)
            out.append({"title": f"{c.name} [{short}]" if short else c.name, "model_name": c.name, "hash": short,
                        "sha256": sha, "filename": str(path) if path is not None else (c.path or c.ref),
                        "config": None})
        return out

    @app.get("/sdapi/v1/samplers", response_model=list[schemas.SamplerItem], responses=_ERRORS)
    async def samplers() -> list[dict[str, Any]]:
        return [{"name": name, "aliases": [], "options": {}} for name in SCHEDULER_NAMES]

    @app.get("/sdapi/v1/schedulers", response_model=list[schemas.SchedulerItem], responses=_ERRORS)
    async def schedulers() -> list[dict[str, Any]]:
        return [{"name": "automatic", "label": "Automatic"}, {"name": "karras", "label": "Karras"}]

    @app.get("/sdapi/v1/progress", response_model=schemas.ProgressResponse, responses=_ERRORS)
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(progress_payload, ctx.queue, skip_current_image)

    a1111_routes.add_routes(app, ctx, _ERRORS)

    @app.post("/sdapi/v1/options", responses=_ERRORS, openapi_extra=_body_doc(schemas.OptionsBody),
              summary="Switch the model (sd_model_checkpoint) and clip skip (CLIP_stop_at_last_layers) for later "
                      "jobs; other options are ignored")
    async def set_options(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(422, "the request body must be a JSON object", "body")
        clip_skip = None
        if "CLIP_stop_at_last_layers" in body:  # checked first: a bad value changes nothing
            clip_skip = a1111_routes.clip_skip_option(body["CLIP_stop_at_last_layers"])
        wanted = body.get("sd_model_checkpoint")
        if wanted is not None:
            if not isinstance(wanted, str):
                raise ApiError(422, "sd_model_checkpoint: must be text", "sd_model_checkpoint")
            ctx.default_model = await anyio.to_thread.run_sync(ctx.resolve, wanted, "sd_model_checkpoint")
            log.info("API default model is now %s", ctx.default_model)
        if clip_skip is not None:
            ctx.clip_skip = clip_skip
            log.info("API clip skip is now %d", ctx.clip_skip)
        ignored = sorted(k for k in body if k not in ("sd_model_checkpoint", "CLIP_stop_at_last_layers"))
        if ignored:
            log.info("ignored options: %s", ", ".join(ignored))
        return JSONResponse(None)

    from heyim_desktop.api.controlnet_routes import add_controlnet_routes

    add_controlnet_routes(app, ctx, _ERRORS)

    from heyim_desktop.api.upscale_routes import register_upscale_routes

    register_upscale_routes(app, ctx, _ERRORS, _GEN_ERRORS)
    return app


def create_asgi(ctx: ApiContext, *, token: str, hosts: frozenset[str], max_body: int = MAX_BODY_BYTES) -> Guard:
    """The app with its security layers: Guard (outermost) -> CORS for local origins -> routes."""
    app = build_app(ctx)
    cors = CORSMiddleware(app, allow_origin_regex=LOCAL_ORIGIN_RE, allow_methods=["GET", "POST"],
                          allow_headers=["Authorization", "Content-Type"], max_age=600)
    return Guard(cors, token=token, hosts=hosts, max_body=max_body)
