"""The one denoising loop every engine shares.

It owns seeds, schedulers, classifier-free guidance, image-to-image strength, progress,
previews and cancellation; engines only supply :class:`~heyim_desktop.core.components.Components`.
Its arithmetic follows diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline
step for step, so the same seed gives the same image as diffusers does.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from diffusers.utils.torch_utils import randn_tensor

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.components import Components
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.images import fit_to_size
from heyim_desktop.core.preview import latents_to_rgb
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress, ProgressCallback
from heyim_desktop.core.schedulers import build_scheduler

log = logging.getLogger(__name__)

PREVIEW_INTERVAL_S = 0.1


@dataclass
class LoopOutput:
    """Decoded images as floats in [0, 1], shape (N, H, W, 3), with what happened on the way."""

    images: npt.NDArray[np.float32]
    seeds: list[int]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    truncated_prompt: str | None = None
    truncated_negative: str | None = None
    #: The final latents (scaled, before decoding), only when run_loop was asked to keep them.
    latents: "torch.Tensor | None" = None


def check_request(components: Components, request: GenerationRequest) -> None:
    """Engine-specific limits on top of the request's own validation."""
    if components.fixed_size is not None and (request.width, request.height) != components.fixed_size:
        w, h = components.fixed_size
        raise InvalidRequest("size", f"this model only makes {w}x{h} images, got {request.width}x{request.height}")
    if request.is_img2img and not components.supports_img2img:
        raise InvalidRequest("init_image", "this model has no image encoder, so it cannot do image-to-image")
    step = components.vae_scale_factor
    if request.width % step or request.height % step:
        raise InvalidRequest("size", f"width and height must be multiples of {step} for this model")


def _tokenize(components: Components, text: str) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    tok = components.tokenizer
    max_len = tok.model_max_length
    enc = tok(text, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    dropped: str | None = None
    full = tok(text, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > max_len and not torch.equal(enc.input_ids, full[:, :max_len]):
        dropped = tok.batch_decode(full[:, max_len - 1 : -1])[0]
    return enc.input_ids, enc.attention_mask, dropped


def _step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generators if len(generators) > 1 else generators[0]
    return kwargs


def guidance_embedding(w: float, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale for guidance-distilled (LCM) UNets."""
    wt = torch.tensor([w * 1000.0])
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000.0) / (half - 1)))
    emb = wt.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def image_to_tensor(image: Any, width: int, height: int) -> torch.Tensor:
    """A Pillow RGB image -> (1, 3, H, W) float32 in [-1, 1], fitted to the target size."""
    fitted = fit_to_size(image.convert("RGB"), width, height)
    arr = np.asarray(fitted, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0


@torch.inference_mode()
def run_loop(
    components: Components,
    request: GenerationRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    previews: bool = True,
    init_latents: torch.Tensor | None = None,
    keep_latents: bool = False,
) -> LoopOutput:
    """Run ``request`` (its seed resolved) through ``components``; images stay float.

    ``init_latents`` and ``keep_latents`` serve multi-stage jobs (core/pipeline.py, hires fix);
    see :func:`run_loop_from_latents`. Ordinary jobs never pass them.
    """
    if request.seed is None:
        raise ValueError("run_loop needs a request with a resolved seed (GenerationRequest.with_seed)")
    check_request(components, request)
    cancel = cancel or CancelToken()
    device, dtype = components.device, components.dtype
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []

    # -- text ---------------------------------------------------------------------
    cancel.raise_if_cancelled()
    ids, mask, dropped = _tokenize(components, request.prompt)
    cond = components.encode_text(ids.to(device), mask.to(device)).to(dtype)
    use_cfg = request.uses_cfg and components.guidance_embedding_dim is None
    dropped_neg = None
    uncond = None
    if use_cfg:
        neg_ids, neg_mask, dropped_neg = _tokenize(components, request.negative_prompt)
        uncond = components.encode_text(neg_ids.to(device), neg_mask.to(device)).to(dtype)
    for label, text in (("prompt", dropped), ("negative prompt", dropped_neg)):
        if text:
            limit = components.tokenizer.model_max_length
            msg = f"The {label} is longer than {limit} tokens; this part was ignored: {text!r}"
            log.warning(msg)
            warnings.append(msg)
    timestep_cond = None
    if components.guidance_embedding_dim is not None:
        timestep_cond = guidance_embedding(
            request.effective_guidance - 1.0, components.guidance_embedding_dim, torch.float32
        ).to(device=device, dtype=dtype)
    _sync(device)
    timings["text_encode"] = time.perf_counter() - t_start

    # -- image-to-image input -------------------------------------------------------
    moments = None
    if request.is_img2img and init_latents is None:
        t0 = time.perf_counter()
        pixels = image_to_tensor(request.init_image, request.width, request.height)
        moments = components.vae_encode(pixels.to(device=device, dtype=dtype))
        _sync(device)
        timings["image_encode"] = time.perf_counter() - t0

    seeds = request.image_seeds()
    batch = max(1, min(components.max_batch, len(seeds)))
    groups = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]
    outputs: list[npt.NDArray[np.float32]] = []
    kept: list[torch.Tensor] = []
    timings["denoise"] = 0.0
    timings["decode"] = 0.0
    steps_done = 0
    steps_total: int | None = None
    last_preview = 0.0
    for group_index, group in enumerate(groups):
        t0 = time.perf_counter()
        n = len(group)
        generators = [torch.Generator("cpu").manual_seed(s) for s in group]
        gen_arg: Any = generators if n > 1 else generators[0]
        scheduler = build_scheduler(request.scheduler_name, components.scheduler_config)
        scheduler.set_timesteps(request.steps, device=device)
        timesteps = scheduler.timesteps
        h = request.height // components.vae_scale_factor
        w = request.width // components.vae_scale_factor
        shape = (n, components.latent_channels, h, w)
        if moments is None and init_latents is None:
            latents = randn_tensor(shape, generator=gen_arg, device=device, dtype=dtype)
            latents = latents * scheduler.init_noise_sigma
        else:
            init_steps = min(int(request.steps * request.strength), request.steps)
            if init_steps < 1:
                raise InvalidRequest(
                    "strength", f"{request.strength:g} x {request.steps} steps leaves no step to run; raise either"
                )
            t_first = max(request.steps - init_steps, 0)
            timesteps = timesteps[t_first * scheduler.order :]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_first * scheduler.order)
            if init_latents is not None:  # given latents start as they are (diffusers' 4-channel image path)
                start = init_latents[group_index * batch : group_index * batch + n].to(device=device, dtype=dtype)
            else:
                assert moments is not None
                mean, logvar = torch.chunk(moments, 2, dim=1)
                std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
                samples = [mean + std * randn_tensor(mean.shape, generator=g, device=device, dtype=dtype) for g in generators]
                start = components.scaling_factor * torch.cat(samples, dim=0)
            noise = randn_tensor(start.shape, generator=gen_arg, device=device, dtype=dtype)
            latents = scheduler.add_noise(start, noise, timesteps[:1].repeat(n))
        if steps_total is None:
            steps_total = len(timesteps) * len(groups)
        if use_cfg:
            assert uncond is not None
            embeds = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        else:
            embeds = cond.expand(n, -1, -1)
        cond_arg = None if timestep_cond is None else timestep_cond.expand(n, -1)
        step_kwargs = _step_kwargs(scheduler, generators)
        guidance = request.effective_guidance
        for t in timesteps:
            cancel.raise_if_cancelled()
            model_in = torch.cat([latents] * 2) if use_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise_pred = components.unet(model_in, t, embeds, cond_arg)
            if use_cfg:
                uncond_pred, text_pred = noise_pred.chunk(2)
                noise_pred = uncond_pred + guidance * (text_pred - uncond_pred)
            latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            steps_done += 1
            if progress is not None:
                now = time.perf_counter()
                preview = None
                if previews and now - last_preview >= PREVIEW_INTERVAL_S:
                    preview = latents_to_rgb(latents[0].float().cpu().numpy())
                    last_preview = now
                progress(Progress(steps_done, steps_total, now - t_start, group_index * batch, len(seeds), preview))
        cancel.raise_if_cancelled()
        _sync(device)
        t1 = time.perf_counter()
        timings["denoise"] += t1 - t0
        if keep_latents:
            kept.append(latents.detach().cpu())
        decoded = components.vae_decode(latents / components.scaling_factor)
        images = (decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        outputs.append(images)
        timings["decode"] += time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t_start
    if steps_done:
        timings["per_step"] = timings["denoise"] / steps_done
    return LoopOutput(
        images=np.concatenate(outputs, axis=0),
        seeds=seeds,
        timings=timings,
        warnings=warnings,
        truncated_prompt=dropped,
        truncated_negative=dropped_neg,
        latents=torch.cat(kept) if kept else None,
    )


def run_loop_from_latents(
    components: Components,
    request: GenerationRequest,
    init_latents: torch.Tensor,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    previews: bool = True,
) -> LoopOutput:
    """Image-to-image that starts from latents rather than an image (hires fix's latent upscale).

    ``init_latents`` (count, C, h, w) are already scaled, like diffusers' img2img with a 4-channel
    ``image``: they are noised to the request's strength and denoised; the request's
    ``init_image`` is not encoded. The request must be image-to-image at the latents' size.
    """
    if not request.is_img2img:
        raise ValueError("run_loop_from_latents needs an image-to-image request")
    expected = (components.latent_channels, request.height // components.vae_scale_factor,
                request.width // components.vae_scale_factor)
    if tuple(init_latents.shape[1:]) != expected or init_latents.shape[0] != request.count:
        raise ValueError(f"latents {tuple(init_latents.shape)} do not fit a {request.width}x{request.height} x{request.count} request")
    return run_loop(components, request, progress=progress, cancel=cancel, previews=previews, init_latents=init_latents)
