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


def _infotexts(result: "GenerationResult") -> list[str]:
    from heyim_desktop.core.metadata import format_parameters

    return [format_parameters(result.request, item.seed, result.model_name) for item in result.images]


def encode_images(result: "GenerationResult") -> tuple[list[str], list[str]]:
    """PNG base64 of every image (each with its parameters chunk) and the parameters texts."""
    texts = _infotexts(result)
    return [png_base64(item.image, text) for item, text in zip(result.images, texts)], texts


def heyim_response(job: Job, mapped: Mapped, images: list[str], model_name: str | None) -> dict[str, Any]:
    result = job.result
    assert result is not None
    req = result.request
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


def a1111_response(job: Job, mapped: Mapped, body: dict[str, Any], images: list[str], texts: list[str],
                   model_name: str | None) -> dict[str, Any]:
    """AUTOMATIC1111's ``{images, parameters, info}``; ``info`` is a JSON string, as there."""
    result = job.result
    parameters = dict(body)
    if not body.get("include_init_images"):
        parameters.pop("init_images", None)
    if result is None:  # interrupted before anything was made: AUTOMATIC1111 answers with no images
        info: dict[str, Any] = {"interrupted": True, "warnings": list(mapped.notes), "infotexts": []}
        return {"images": [], "parameters": parameters, "info": json.dumps(info)}
    req = result.request
    seeds = [i.seed for i in result.images]
    count = len(seeds)
    info = {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * count,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * count,
        "seed": req.seed,
        "all_seeds": seeds,
        "subseed": req.seed,
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.scheduler_name,
        "cfg_scale": req.effective_guidance,
        "steps": req.steps,
        "batch_size": count,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name or result.model_name,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": req.strength if req.is_img2img else None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or time.time())),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"HeyIm {__version__}",
        # HeyIm's additions:
        "generation_time": job_seconds(job),
        "history_ids": saved_ids(job),
        "warnings": [*mapped.notes, *result.warnings],
    }
    return {"images": images if mapped.send_images else [], "parameters": parameters, "info": json.dumps(info)}


def progress_payload(queue: JobQueue, skip_current_image: bool) -> dict[str, Any]:
    """``/sdapi/v1/progress``: the running job's fraction, ETA and a preview."""
    job = queue.running
    waiting = len(queue.pending())
    state = {
        "skipped": False,
        "interrupted": False,
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
