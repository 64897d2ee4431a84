"""The AUTOMATIC1111 routes clients probe besides generation: lists, options, png-info, skip.

Every answer has AUTOMATIC1111's shape (modules/api/models.py). Lists of things HeyIm does
not have are empty; POST routes for features HeyIm lacks answer 501 with AUTOMATIC1111's
error keys (``error``, ``detail``, ``body``, ``errors``) and a message saying so.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from heyim_desktop import __version__
from heyim_desktop.api import schemas
from heyim_desktop.api.context import ApiContext
from heyim_desktop.api.mapping import ApiError
from heyim_desktop.core.request import CLIP_SKIP_RANGE

log = logging.getLogger(__name__)

#: POST routes of AUTOMATIC1111 that ask for something HeyIm does not do, and what to say.
UNSUPPORTED_POSTS: dict[str, str] = {
    "/sdapi/v1/interrogate": "HeyIm has no image interrogator (CLIP or DeepBooru captioning)",
    "/sdapi/v1/create/embedding": "HeyIm does not create textual-inversion embeddings",
    "/sdapi/v1/create/hypernetwork": "HeyIm does not create hypernetworks",
    "/sdapi/v1/train/embedding": "HeyIm does not train embeddings",
    "/sdapi/v1/train/hypernetwork": "HeyIm does not train hypernetworks",
}

_MAX_PNG_INFO_B64 = 40 * 1024 * 1024


def _docs(errors: dict[int | str, dict[str, Any]], code: int, text: str) -> dict[int | str, dict[str, Any]]:
    return {**errors, code: {"model": schemas.ErrorResponse, "description": text}}


def unsupported(message: str) -> JSONResponse:
    """AUTOMATIC1111's error keys, plus HeyIm's own (success, field)."""
    return JSONResponse({"success": False, "error": "NotImplementedError", "detail": message, "body": "",
                         "errors": message, "field": None}, status_code=501)


def options(ctx: ApiContext) -> dict[str, Any]:
    """``GET /sdapi/v1/options``: the keys clients read, with HeyIm's values."""
    ref = ctx.default_model
    name = ctx.name_of(ref) or ""
    sha = ctx.model_sha256(ref, wait=False) if ref else None
    title = f"{name} [{sha[:10]}]" if name and sha else name
    return {
        "sd_model_checkpoint": title,
        "sd_checkpoint_hash": sha or "",
        "sd_vae": "Automatic",
        "sd_vae_overrides_per_model_preferences": True,
        "CLIP_stop_at_last_layers": ctx.clip_skip,
        "samples_format": "png",
        "samples_save": True,
        "save_images_add_number": True,
        "grid_save": False,
        "jpeg_quality": 80,
        "live_previews_enable": True,
        "show_progress_every_n_steps": 1,
        "show_progress_type": "Approx cheap",
        "eta_noise_seed_delta": 0,
        "eta_ddim": 0.0,
        "eta_ancestral": 1.0,
        "randn_source": "CPU",
        "sd_checkpoints_limit": 1,
        "img2img_fix_steps": False,
        "img2img_color_correction": False,
        "face_restoration": False,
        "face_restoration_model": "CodeFormer",
        "upscaler_for_img2img": None,
        "enable_emphasis": True,
        "emphasis": "Original",
        "comma_padding_backtrack": 20,
        "add_model_hash_to_info": True,
        "add_model_name_to_info": True,
        "add_version_to_infotext": True,
        "save_incomplete_images": False,
        "interrogate_clip_skip_categories": [],
        "sdxl_crop_top": 0,
        "sdxl_crop_left": 0,
        "token_merging_ratio": 0.0,
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": 0.0,
        "s_noise": 1.0,
    }


def cmd_flags(ctx: ApiContext) -> dict[str, Any]:
    """``GET /sdapi/v1/cmd-flags``: AUTOMATIC1111's flag names, with what is true of this server."""
    from heyim_desktop.core.paths import data_dir

    settings = ctx.engine_settings()
    full = settings.get("precision") == "fp32"
    return {
        "api": True, "nowebui": True, "listen": False, "port": None, "api_auth": None, "api_log": False,
        "data_dir": str(data_dir()), "ckpt": None, "ckpt_dir": None, "vae_dir": None, "lora_dir": None,
        "embeddings_dir": None, "hypernetwork_dir": None, "styles_file": [str(ctx.styles.path)],
        "no_half": full, "no_half_vae": full, "precision": "full" if full else "autocast",
        "lowvram": settings.get("memory") == "low", "medvram": False,
        "xformers": False, "opt_sdp_attention": True, "use_cpu": ["all"] if settings.get("device") == "cpu" else [],
        "device_id": None, "skip_torch_cuda_test": False,
        "disable_safe_unpickle": False, "enable_insecure_extension_access": False, "api_server_stop": False,
        "timeout_keep_alive": 30, "version": __version__,
    }


def png_info(data: str) -> dict[str, Any]:
    """``POST /sdapi/v1/png-info`` through HeyIm's metadata parser (any AUTOMATIC1111 image)."""
    from PIL import Image, UnidentifiedImageError

    from heyim_desktop.core.images import MAX_INPUT_PIXELS
    from heyim_desktop.core.metadata import parse_parameters, read_parameters_text

    text = data.strip()
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]
    if len(text) > _MAX_PNG_INFO_B64:
        raise ApiError(413, f"image: larger than {_MAX_PNG_INFO_B64 * 3 // 4 // (1024 * 1024)} MB", "image")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image: is not valid base64", "image") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:  # reads the headers and text chunks, not the pixels
            if img.width * img.height > MAX_INPUT_PIXELS:
                raise ApiError(422, f"image: {img.width}x{img.height} is more pixels than HeyIm reads", "image")
            items = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str) and k != "parameters"}
        geninfo = read_parameters_text(io.BytesIO(raw)) or ""
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ApiError(422, f"image: not a readable image ({exc})", "image") from None
    parameters: dict[str, Any] = {}
    if geninfo.strip():
        parsed = parse_parameters(geninfo)
        parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params}
        if parsed.size is not None:
            parameters["Size-1"], parameters["Size-2"] = str(parsed.size[0]), str(parsed.size[1])
    return {"info": geninfo, "items": items, "parameters": parameters}


def add_routes(app: FastAPI, ctx: ApiContext, errors: dict[int | str, dict[str, Any]]) -> None:
    """Register the routes on ``app`` (``errors`` documents the answers every route can give)."""

    async def in_thread(fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    # -- lists --------------------------------------------------------------------------------
    @app.get("/sdapi/v1/scripts", response_model=schemas.ScriptsList, responses=errors)
    async def scripts() -> dict[str, Any]:
        return {"txt2img": [], "img2img": []}

    @app.get("/sdapi/v1/script-info", response_model=list[schemas.ScriptInfo], responses=errors)
    async def script_info() -> list[Any]:
        return []

    @app.get("/sdapi/v1/sd-vae", response_model=list[schemas.SDVaeItem], responses=errors,
             summary="External VAEs (HeyIm uses each model's own VAE)")
    async def sd_vae() -> list[Any]:
        return []

    @app.get("/sdapi/v1/sd-modules", response_model=list[schemas.SDModuleItem], responses=errors,
             summary="Forge's separate VAE / text-encoder files (none in HeyIm)")
    async def sd_modules() -> list[Any]:
        return []

    @app.get("/sdapi/v1/hypernetworks", response_model=list[schemas.HypernetworkItem], responses=errors)
    async def hypernetworks() -> list[Any]:
        return []

    @app.get("/sdapi/v1/face-restorers", response_model=list[schemas.FaceRestorerItem], responses=errors)
    async def face_restorers() -> list[Any]:
        return []

    @app.get("/sdapi/v1/realesrgan-models", response_model=list[schemas.RealesrganItem], responses=errors)
    async def realesrgan_models() -> list[Any]:
        return []

    @app.get("/sdapi/v1/extensions", response_model=list[schemas.ExtensionItem], responses=errors)
    async def extensions() -> list[Any]:
        return []

    @app.get("/sdapi/v1/embeddings", response_model=schemas.EmbeddingsResponse, responses=errors)
    async def embeddings() -> dict[str, Any]:
        return dict(await in_thread(ctx.embeddings))

    @app.get("/sdapi/v1/upscalers", response_model=list[schemas.UpscalerItem], responses=errors)
    async def upscalers() -> list[Any]:
        return list(await in_thread(ctx.upscalers))

    @app.get("/sdapi/v1/latent-upscale-modes", response_model=list[schemas.LatentUpscalerModeItem], responses=errors)
    async def latent_upscale_modes() -> list[Any]:
        return list(await in_thread(ctx.latent_upscale_modes))

    @app.get("/sdapi/v1/loras", response_model=list[schemas.LoraItem], responses=errors)
    async def loras() -> list[Any]:
        return list(await in_thread(ctx.loras))

    @app.get("/sdapi/v1/prompt-styles", response_model=list[schemas.PromptStyleItem], responses=errors)
    async def prompt_styles() -> list[dict[str, Any]]:
        styles = await in_thread(ctx.styles.styles)
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles]

    @app.get("/sdapi/v1/memory", response_model=schemas.MemoryResponse, responses=errors)
    async def memory() -> dict[str, Any]:
        from heyim_desktop.api.a1111_lists import memory as read_memory

        return dict(await in_thread(read_memory))

    @app.get("/sdapi/v1/cmd-flags", responses=errors, summary="AUTOMATIC1111's command-line flags, as true of HeyIm")
    async def get_cmd_flags() -> dict[str, Any]:
        return dict(await in_thread(cmd_flags, ctx))

    @app.get("/sdapi/v1/options", response_model=schemas.OptionsResponse, responses=errors)
    async def get_options() -> dict[str, Any]:
        return dict(await in_thread(options, ctx))

    # -- refreshes: HeyIm reads its model library afresh on every request --------------------------
    for path in ("/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-vae", "/sdapi/v1/refresh-loras",
                 "/sdapi/v1/refresh-embeddings"):
        app.add_api_route(path, _refresh, methods=["POST"], responses=errors,
                          summary="Nothing to do: HeyIm lists its models afresh on every request")

    # -- png-info, skip, interrupt ---------------------------------------------------------------
    @app.post("/sdapi/v1/png-info", response_model=schemas.PNGInfoResponse, responses=_docs(errors, 422, "Not a readable image"),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": schemas.PNGInfoRequest.model_json_schema()}}}})
    async def post_png_info(request: Request) -> dict[str, Any]:
        from heyim_desktop.api.app import _json_body

        body = await _json_body(request)
        image = body.get("image") if isinstance(body, dict) else None
        if not isinstance(image, str) or not image.strip():
            raise ApiError(422, "image: a base64 image is required", "image")
        return dict(await in_thread(png_info, image))

    @app.post("/sdapi/v1/skip", responses=errors, summary="Finish the current image early and go on with the next")
    async def skip() -> Response:
        job = ctx.queue.running
        if job is not None:
            job.cancel.skip()
        return JSONResponse(None)

    @app.post("/sdapi/v1/interrupt", responses=errors,
              summary="Stop the running job; its client gets what was made (the current image decoded as it is)")
    async def interrupt() -> dict[str, Any]:
        job = ctx.queue.running
        if job is not None:
            job.cancel.interrupt()
        return {}

    # -- what HeyIm does not do ----------------------------------------------------------------------
    for path, message in UNSUPPORTED_POSTS.items():
        app.add_api_route(path, _unsupported_route(message), methods=["POST"], responses=_docs(errors, 501, "Not available in HeyIm"),
                          summary=f"Not available: {message}")


async def _refresh() -> Response:
    return JSONResponse(None)


def _unsupported_route(message: str) -> Any:
    async def route() -> JSONResponse:
        return unsupported(f"{message}.")

    return route


def clip_skip_option(value: Any) -> int:
    """A CLIP_stop_at_last_layers value from POST /sdapi/v1/options, checked."""
    lo, hi = CLIP_SKIP_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or not lo <= value <= hi:
        raise ApiError(422, f"CLIP_stop_at_last_layers: must be a whole number from {lo} to {hi}, got {value!r}",
                       "CLIP_stop_at_last_layers")
    return int(value)


__all__ = ["UNSUPPORTED_POSTS", "add_routes", "clip_skip_option", "png_info", "unsupported"]
