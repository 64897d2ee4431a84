"""Finished jobs and running progress turned into each dialect's JSON."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import TYPE_CHECKING, Any

from heyim_desktop import __version__
from heyim_desktop.api.mapping import ApiError, Mapped
from heyim_desktop.core.errors import ImageError, InvalidRequest, ModelError, OutOfMemory, StorageError, UserFacingError
from heyim_desktop.core.jobs import Job, JobQueue, JobState
from heyim_desktop.core.request import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

    from heyim_desktop.core.result import GenerationResult


def png_base64(image: "Image.Image", parameters: str | None = None) -> str:
    from heyim_desktop.core.output import png_bytes_info

    buf = io.BytesIO()
    pnginfo = png_bytes_info(parameters) if parameters else None
    image.save(buf, format="PNG", pnginfo=pnginfo)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def failure(job: Job, names: dict[str, str]) -> ApiError:
    """The HTTP answer for a job that failed in the worker."""
    exc = job.error
    message = job.error_message or "the job failed"
    if isinstance(exc, InvalidRequest):
        client = names.get(exc.field, exc.field)
        return ApiError(422, f"{client}: {exc.detail}", client)
    if isinstance(exc, ImageError):
        return ApiError(422, message, names.get("init_image"))
    if isinstance(exc, (ModelError, OutOfMemory)):
        return ApiError(503, message)
    if isinstance(exc, StorageError):
        return ApiError(507, message)
    if isinstance(exc, UserFacingError):
        return ApiError(500, message)
    return ApiError(500, message)


def saved_ids(job: Job) -> list[Any]:
    out: list[Any] = []
    for item in job.saved:
        ident = getattr(item, "id", None)
        out.append(ident if isinstance(ident, (int, str)) else str(item))
    return out


def job_seconds(job: Job) -> float:
    if job.started is None or job.finished_at is None:
        return 0.0
    return round(job.finished_at - job.started, 4)


def _infotexts(result: "GenerationResult", model_hash: str | None) -> list[str]:
    from heyim_desktop.core.metadata import format_parameters

    return [format_parameters(result.request, item.seed, result.model_name, model_hash=model_hash or result.model_hash,
                              extra=dict(result.parameters_extra))
            for item in result.images]


def encode_images(result: "GenerationResult", model_hash: str | None = None) -> tuple[list[str], list[str]]:
    """PNG base64 of every image (each with its parameters chunk) and the parameters texts."""
    texts = _infotexts(result, model_hash)
    return [png_base64(item.image, text) for item, text in zip(result.images, texts)], texts


def heyim_response(job: Job, mapped: Mapped, images: list[str], model_name: str | None) -> dict[str, Any]:
    result = job.result
    assert result is not None
    req = result.request
    assert isinstance(req, GenerationRequest)
    warnings = [*mapped.notes, *result.warnings]
    return {
        "success": True,
        "imageBase64": images[0] if images else "",
        "images": images,
        "metadata": {
            "prompt": req.prompt,
            "negativePrompt": req.negative_prompt,
            "steps": req.steps,
            "cfgScale": req.guidance,
            "seed": req.seed,
            "seeds": [i.seed for i in result.images],
            "width": req.width,
            "height": req.height,
            "scheduler": req.scheduler_name,
            "model": model_name or result.model_name,
            "generationTime": job_seconds(job),
            "hasInputImage": req.is_img2img,
            "strength": req.strength if req.is_img2img else None,
            "historyIds": saved_ids(job),
            "warnings": warnings,
        },
    }


#: The fields of AUTOMATIC1111's txt2img request model with their defaults (``parameters`` echoes
#: the request with these filled in, as AUTOMATIC1111 echoes its parsed request model).
_TXT2IMG_DEFAULTS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None,
    "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512,
    "restore_faces": None, "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False,
    "eta": None, "denoising_strength": None, "s_min_uncond": None, "s_churn": None, "s_tmax": None,
    "s_tmin": None, "s_noise": None, "override_settings": None, "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None, "refiner_switch_at": None, "disable_extra_networks": False,
    "firstpass_image": None, "comments": None, "enable_hr": False, "firstphase_width": 0,
    "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None,
    "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {}, "infotext": None,
}
_IMG2IMG_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in _TXT2IMG_DEFAULTS.items()
       if not k.startswith(("hr_", "firstphase_")) and k not in ("enable_hr", "firstpass_image")},
    "init_images": None, "resize_mode": 0, "image_cfg_scale": None, "mask": None, "mask_blur_x": 4,
    "mask_blur_y": 4, "mask_blur": None, "mask_round": True, "inpainting_fill": 0, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": None,
    "latent_mask": None, "denoising_strength": 0.75, "include_init_images": False,
}


def a1111_parameters(body: dict[str, Any], *, img2img: bool) -> dict[str, Any]:
    """The request as AUTOMATIC1111 echoes it: every field, defaults filled, images left out."""
    parameters = dict(_IMG2IMG_DEFAULTS if img2img else _TXT2IMG_DEFAULTS)
    parameters.update(body)
    if img2img and not body.get("include_init_images"):
        parameters["init_images"] = None
        parameters["mask"] = None
    return parameters


def _extra_params(req: Any) -> dict[str, Any]:
    """What AUTOMATIC1111 keeps in ``extra_generation_params``: the LoRA and embedding hashes, and
    hires fix's keys as its txt2img sets them (``Hires upscale`` or ``Hires resize``, then
    ``Hires steps`` when set, and ``Hires upscaler``)."""
    from heyim_desktop.core.lora import network_parameters

    extra: dict[str, Any] = dict(network_parameters(req))
    hires = getattr(req, "hires", None)
    if hires is not None:
        if hires.resize_x or hires.resize_y:
            extra["Hires resize"] = f"{hires.resize_x}x{hires.resize_y}"
        else:
            extra["Hires upscale"] = hires.scale
        if hires.steps:
            extra["Hires steps"] = hires.steps
        extra["Hires upscaler"] = hires.upscaler
    return extra


def _denoising_strength(req: Any, body: dict[str, Any]) -> Any:
    """``info.denoising_strength``: img2img's strength, hires fix's second pass's, else as sent."""
    if req.is_img2img:
        return req.strength
    if getattr(req, "hires", None) is not None:
        return req.hires.denoising_strength
    return body.get("denoising_strength")


def a1111_info(job: Job, mapped: Mapped, body: dict[str, Any], texts: list[str], model_name: str | None,
               model_hash: str | None) -> dict[str, Any]:
    """The ``info`` object, key for key as AUTOMATIC1111's ``Processed.js()`` writes it.

    It is complete even when nothing was made (a job interrupted before its first step).
    """
    result = job.result
    req = result.request if result is not None else job.request
    assert isinstance(req, GenerationRequest)
    planned = req.image_seeds() if req.seed is not None else []
    seeds = [i.seed for i in result.images] if result is not None else []
    all_seeds = planned or seeds or [-1]
    prompts = [req.prompt] * max(1, req.count)
    negatives = [req.negative_prompt] * max(1, req.count)
    batch_size = body.get("batch_size")
    warnings = [*mapped.notes, *(result.warnings if result is not None else ())]
    return {
        "prompt": prompts[0],
        "all_prompts": prompts,
        "negative_prompt": negatives[0],
        "all_negative_prompts": negatives,
        "seed": all_seeds[0],
        "all_seeds": all_seeds,
        "subseed": all_seeds[0],  # no variation seeds in HeyIm: the subseed is the seed
        "all_subseeds": all_seeds,
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.scheduler_name,
        "cfg_scale": req.effective_guidance,
        "steps": req.steps,
        "batch_size": batch_size if isinstance(batch_size, int) and not isinstance(batch_size, bool) else 1,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name or (result.model_name if result is not None else ""),
        "sd_model_hash": model_hash or "",
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": _denoising_strength(req, body),
        "extra_generation_params": _extra_params(req),
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": list(req.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
        "clip_skip": req.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"HeyIm {__version__}",
        # HeyIm's additions (clients that validate AUTOMATIC1111's shape ignore unknown keys):
        "generation_time": job_seconds(job),
        "history_ids": saved_ids(job),
        "warnings": warnings,
        "interrupted": job.state is JobState.CANCELLED or bool(result is not None and result.interrupted),
    }


def a1111_response(job: Job, mapped: Mapped, body: dict[str, Any], images: list[str], texts: list[str],
                   model_name: str | None, model_hash: str | None = None, *, img2img: bool = False) -> dict[str, Any]:
    """AUTOMATIC1111's ``{images, parameters, info}``; ``info`` is a JSON string, as there.

    An interrupted job answers with what it made (the last image partial), or no images.
    """
    info = a1111_info(job, mapped, body, texts, model_name, model_hash)
    return {"images": images if mapped.send_images else [], "parameters": a1111_parameters(body, img2img=img2img),
            "info": json.dumps(info)}


def progress_payload(queue: JobQueue, skip_current_image: bool) -> dict[str, Any]:
    """``/sdapi/v1/progress``: the running job's fraction, ETA and a preview."""
    job = queue.running
    waiting = len(queue.pending())
    state = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": waiting,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if job is None or job.state is not JobState.RUNNING:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    progress = job.progress
    state.update(
        interrupted=job.cancel.cancelled,
        skipped=job.cancel.skipping,
        job=f"job-{job.id}",
        job_count=waiting + 1,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or time.time())),
    )
    if progress is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": "Loading the model"}
    fraction = min(1.0, max(0.0, progress.fraction))
    elapsed = time.time() - (job.started or time.time())
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    state.update(job_no=progress.image_index, sampling_step=progress.step, sampling_steps=progress.total)
    image = None
    if progress.preview is not None and not skip_current_image:
        from PIL import Image

        image = png_base64(Image.fromarray(progress.preview))
    text = f"Image {progress.image_index + 1}/{progress.image_count}, step {progress.step}/{progress.total}"
    return {"progress": round(fraction, 4), "eta_relative": round(max(0.0, eta), 3), "state": state,
            "current_image": image, "textinfo": text}
