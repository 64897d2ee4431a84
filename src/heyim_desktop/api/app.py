"""The routes: HeyIm's original endpoints and AUTOMATIC1111-compatible ones over one queue.

Routes never run the engine: they submit a job to the shared JobQueue and wait on it, so
requests from the window, the menu bar and any number of HTTP clients run one at a time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from heyim_desktop import __version__
from heyim_desktop.api import schemas
from heyim_desktop.api.context import ApiContext
from heyim_desktop.api.mapping import ApiError, Mapped, build_request, parse_a1111, parse_heyim
from heyim_desktop.api.results import (
    a1111_response,
    encode_images,
    failure,
    heyim_response,
    job_seconds,
    progress_payload,
)
from heyim_desktop.api.security import LOCAL_ORIGIN_RE, MAX_BODY_BYTES, Guard
from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.core.jobs import Job, JobState, QueueClosed
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
_GEN_ERRORS = {**_ERRORS, **{c: {"model": schemas.ErrorResponse, "description": d} for c, d in {
    409: "Cancelled (HeyIm route)", 500: "A bug (logged)", 503: "Model cannot load, out of memory, or queue full",
    507: "Saving to the history failed"}.items()}}


def _body_doc(model: type[schemas.BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"success": False, "error": exc.message, "detail": exc.message, "field": exc.field},
                        status_code=exc.status)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})", "body") from None


async def _run_job(ctx: ApiContext, request: Request, mapped: Mapped) -> Job:
    """Submit the job and wait for it; a client that hangs up cancels its job."""
    def prepare() -> Any:  # the model library reads folders; input images are decoded: not on the event loop
        from heyim_desktop.core.errors import InvalidRequest
        from heyim_desktop.core.lora import resolve_networks

        built = build_request(mapped, ctx.resolve(mapped.model, mapped.model_field))
        if built.controlnets:
            from heyim_desktop.api.controlnet_routes import _catalog, resolve_controlnets

            built = resolve_controlnets(built, _catalog(ctx))
        try:
            return resolve_networks(built, ctx.networks)
        except InvalidRequest as exc:
            raise ApiError(422, str(exc), mapped.names.get(exc.field, exc.field)) from None

    gen_request = await anyio.to_thread.run_sync(prepare)
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
        entries = [{"name": c.name, "ref": c.ref, "loaded": c.ref == loaded, "default": c.ref == default}
                   for c in ctx.models()]
        return {"models": entries, "current": ctx.name_of(loaded)}

    @app.post("/api/generate", response_model=schemas.GenerateResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.GenerateRequest), summary="HeyIm's original generate route")
    async def generate(request: Request) -> Response:
        mapped = parse_heyim(await _json_body(request))
        job = await _run_job(ctx, request, mapped)
        if job.state is JobState.CANCELLED:
            raise ApiError(409, "the job was cancelled; nothing was saved")
        if job.state is JobState.FAILED:
            raise failure(job, mapped.names)
        assert job.result is not None
        images, _texts = await anyio.to_thread.run_sync(encode_images, job.result)
        name = await anyio.to_thread.run_sync(ctx.name_of, job.request.model)
        return JSONResponse(heyim_response(job, mapped, images, name))

    async def _a1111(request: Request, img2img: bool) -> Response:
        body = await _json_body(request)
        mapped = parse_a1111(body, img2img=img2img)
        job = await _run_job(ctx, request, mapped)
        if job.state is JobState.FAILED:
            raise failure(job, mapped.names)
        images: list[str] = []
        texts: list[str] = []
        if job.result is not None:
            images, texts = await anyio.to_thread.run_sync(encode_images, job.result)
        name = await anyio.to_thread.run_sync(ctx.name_of, job.request.model)
        return JSONResponse(a1111_response(job, mapped, body, images, texts, name))

    @app.post("/sdapi/v1/txt2img", response_model=schemas.ImagesResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.Txt2ImgRequest))
    async def txt2img(request: Request) -> Response:
        return await _a1111(request, img2img=False)

    @app.post("/sdapi/v1/img2img", response_model=schemas.ImagesResponse, responses=_GEN_ERRORS,
              openapi_extra=_body_doc(schemas.Img2ImgRequest))
    async def img2img(request: Request) -> Response:
        return await _a1111(request, img2img=True)

    @app.get("/sdapi/v1/sd-models", response_model=list[schemas.SDModelItem], responses=_ERRORS)
    async def sd_models() -> list[dict[str, Any]]:
        choices = await anyio.to_thread.run_sync(ctx.models)
        return [{"title": c.name, "model_name": c.name, "hash": None, "sha256": None,
                 "filename": c.path or c.ref, "config": None} for c in choices]

    @app.get("/sdapi/v1/samplers", response_model=list[schemas.SamplerItem], responses=_ERRORS)
    async def samplers() -> list[dict[str, Any]]:
        return [{"name": name, "aliases": [], "options": {}} for name in SCHEDULER_NAMES]

    @app.get("/sdapi/v1/schedulers", response_model=list[schemas.SchedulerItem], responses=_ERRORS)
    async def schedulers() -> list[dict[str, Any]]:
        return [{"name": "automatic", "label": "Automatic"}, {"name": "karras", "label": "Karras"}]

    @app.get("/sdapi/v1/progress", response_model=schemas.ProgressResponse, responses=_ERRORS)
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(progress_payload, ctx.queue, skip_current_image)

    @app.post("/sdapi/v1/interrupt", responses=_ERRORS, summary="Cancel the running job")
    async def interrupt() -> dict[str, Any]:
        ctx.queue.cancel_running()
        return {}

    @app.get("/sdapi/v1/options", responses=_ERRORS)
    async def get_options() -> dict[str, Any]:
        name = await anyio.to_thread.run_sync(lambda: ctx.name_of(ctx.default_model))
        return {"sd_model_checkpoint": name or "", "samples_format": "png",
                "sd_checkpoint_hash": None, "CLIP_stop_at_last_layers": 1}

    @app.post("/sdapi/v1/options", responses=_ERRORS, openapi_extra=_body_doc(schemas.OptionsBody),
              summary="Switch the model for later jobs (sd_model_checkpoint); other options are ignored")
    async def set_options(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(422, "the request body must be a JSON object", "body")
        wanted = body.get("sd_model_checkpoint")
        if wanted is not None:
            if not isinstance(wanted, str):
                raise ApiError(422, "sd_model_checkpoint: must be text", "sd_model_checkpoint")
            ctx.default_model = await anyio.to_thread.run_sync(ctx.resolve, wanted, "sd_model_checkpoint")
            log.info("API default model is now %s", ctx.default_model)
        ignored = sorted(k for k in body if k != "sd_model_checkpoint")
        if ignored:
            log.info("ignored options: %s", ", ".join(ignored))
        return JSONResponse(None)

    from heyim_desktop.api.controlnet_routes import add_controlnet_routes

    add_controlnet_routes(app, ctx, _ERRORS)
    return app


def create_asgi(ctx: ApiContext, *, token: str, hosts: frozenset[str], max_body: int = MAX_BODY_BYTES) -> Guard:
    """The app with its security layers: Guard (outermost) -> CORS for local origins -> routes."""
    app = build_app(ctx)
    cors = CORSMiddleware(app, allow_origin_regex=LOCAL_ORIGIN_RE, allow_methods=["GET", "POST"],
                          allow_headers=["Authorization", "Content-Type"], max_age=600)
    return Guard(cors, token=token, hosts=hosts, max_body=max_body)
