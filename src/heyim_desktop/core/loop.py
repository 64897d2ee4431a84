"""The one denoising loop every UNet-family engine shares.

It owns seeds, schedulers, guidance, image-to-image strength, progress, previews and
cancellation; engines only supply :class:`~heyim_desktop.core.components.Components`, and
features join through :mod:`~heyim_desktop.core.extensions`. Its arithmetic follows
diffusers' StableDiffusion(XL)Pipeline and their img2img pipelines step for step, so the
same seed gives the same image as diffusers does.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from diffusers.utils.torch_utils import randn_tensor

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.components import Components
from heyim_desktop.core.conditioning import ImageCond, UNetCall
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.extensions import Extension, LoopState, ProgressReporter, extensions_for
from heyim_desktop.core.guidance import build_guidance
from heyim_desktop.core.images import fit_to_size
from heyim_desktop.core.prompt_schedule import composed_weights, encode_request
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import ProgressCallback
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
    #: The undecoded latents (N, C, h, w) of a stage that stops early (:attr:`Stage.end`); else None.
    latents: torch.Tensor | None = None
    #: Stopped by ``CancelToken.interrupt()``: ``images`` holds what was made, the last one partial.
    interrupted: bool = False


def check_request(caps: Capabilities, request: GenerationRequest, vae_scale_factor: int = 8) -> None:
    """A model's limits on top of the request's own validation."""
    if caps.fixed_size is not None and (request.width, request.height) != caps.fixed_size:
        w, h = caps.fixed_size
        raise InvalidRequest("size", f"this model only makes {w}x{h} images, got {request.width}x{request.height}")
    if request.is_img2img and not caps.img2img:
        raise InvalidRequest("init_image", "this model has no image encoder, so it cannot do image-to-image")
    if request.clip_skip > 1 and not caps.clip_skip:
        raise InvalidRequest("clip_skip", "clip skip is not available with this engine (PyTorch only); set it to 1")
    if request.inpaint is not None and caps.inpaint == "none":
        raise InvalidRequest("mask", "this model cannot inpaint")
    if request.controlnets and not caps.controlnet:
        raise InvalidRequest("controlnet", "this model cannot use ControlNet")
    step = max(caps.size_step, vae_scale_factor)
    if request.width % step or request.height % step:
        raise InvalidRequest("size", f"width and height must be multiples of {step} for this model")


def _step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generators if len(generators) > 1 else generators[0]
    return kwargs


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


def encode_image(components: Components, request: GenerationRequest) -> ImageCond:
    """The input image's VAE moments (image-to-image), else an empty :class:`ImageCond`."""
    if request.inpaint is not None:
        from heyim_desktop.core.inpaint import encode_inpaint_image

        return encode_inpaint_image(components, request)
    if not request.is_img2img:
        return ImageCond()
    pixels = image_to_tensor(request.init_image, request.width, request.height)
    return ImageCond(moments=components.vae_encode(pixels.to(device=components.device, dtype=components.dtype)))


def img2img_start(request: GenerationRequest, scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """The timesteps image-to-image runs at ``request.strength`` (diffusers' ``get_timesteps``)."""
    init_steps = min(int(request.steps * request.strength), request.steps)
    if init_steps < 1:
        raise InvalidRequest("strength", f"{request.strength:g} x {request.steps} steps leaves no step to run; raise either")
    t_first = max(request.steps - init_steps, 0)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_first * scheduler.order)
    return timesteps[t_first * scheduler.order :]


def sample_moments(moments: torch.Tensor, generators: list[torch.Generator], scaling_factor: float) -> torch.Tensor:
    """One latent per generator drawn from the VAE's distribution, scaled for the UNet."""
    mean, logvar = torch.chunk(moments, 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    samples = [mean + std * randn_tensor(mean.shape, generator=g, device=mean.device, dtype=mean.dtype) for g in generators]
    return scaling_factor * torch.cat(samples, dim=0)


def prepare_latents(state: LoopState, shape: tuple[int, ...]) -> None:
    """Starting latents for the group: pure noise, or the input image noised to the strength."""
    components, scheduler = state.components, state.scheduler
    gens = state.generators
    gen_arg: Any = gens if len(gens) > 1 else gens[0]
    device, dtype = components.device, components.dtype
    if state.image.moments is None:
        state.latents = randn_tensor(shape, generator=gen_arg, device=device, dtype=dtype) * scheduler.init_noise_sigma
        return
    state.timesteps = img2img_start(state.request, scheduler, state.timesteps)
    init = sample_moments(state.image.moments, gens, components.scaling_factor)
    noise = randn_tensor(init.shape, generator=gen_arg, device=device, dtype=dtype)
    state.init_latents, state.noise = init, noise
    state.latents = scheduler.add_noise(init, noise, state.timesteps[:1].repeat(len(gens)))


def _cutoff(scheduler: Any, fraction: float) -> int:
    """The training timestep at ``fraction`` of the way through denoising (diffusers' discrete cutoff)."""
    train = scheduler.config.num_train_timesteps
    return int(round(train - (fraction * train)))


@dataclass(frozen=True)
class Stage:
    """The part of the schedule one run covers; the default is all of it, decoded.

    A job split between two models (SDXL base, then the refiner) runs the first with ``end``
    (stop once the timesteps fall below that fraction and hand back undecoded latents, as
    diffusers' ``denoising_end``) and the second with ``start`` and those ``latents``
    (resume at the same fraction without adding noise, as ``denoising_start``).
    """

    start: float | None = None
    end: float | None = None
    #: The first stage's latents, one per image of the job (with ``start``).
    latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise InvalidRequest(f"denoising_{name}", f"must be between 0 and 1 (exclusive), got {value:g}")
        if (self.start is None) != (self.latents is None):
            raise ValueError("a stage that starts part-way needs the latents to start from, and only then")

    @property
    def decodes(self) -> bool:
        return self.end is None

    def image(self, components: Components, request: GenerationRequest) -> ImageCond:
        """The input image's conditioning; a resumed stage starts from latents instead."""
        return encode_image(components, request) if self.start is None else ImageCond()

    def prepare(
        self, state: LoopState, shape: tuple[int, ...], fresh: "Callable[[LoopState, tuple[int, ...]], None]"
    ) -> None:
        """Starting latents and the timesteps this stage runs; ``fresh`` makes them at the start of a job."""
        if self.latents is not None and self.start is not None:
            resume_latents(state, self.latents, self.start)
        else:
            fresh(state, shape)
        if self.end is not None:
            cutoff = _cutoff(state.scheduler, self.end)
            state.timesteps = state.timesteps[: sum(1 for t in state.timesteps if t >= cutoff)]


def resume_latents(state: LoopState, latents: torch.Tensor, start: float) -> None:
    """Start this group from ``latents`` at the timestep ``start`` of the way through (no noise added)."""
    scheduler = state.scheduler
    count = int((scheduler.timesteps < _cutoff(scheduler, start)).sum().item())
    if scheduler.order == 2 and count % 2 == 0:
        count += 1  # a second-order scheduler must not resume between its two evaluations
    first = len(scheduler.timesteps) - count
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    state.timesteps = scheduler.timesteps[first:]
    state.first_step = first
    n = len(state.generators)
    state.latents = latents[state.first_image : state.first_image + n].to(
        device=state.components.device, dtype=state.components.dtype
    )


def latent_preparer(request: GenerationRequest) -> Callable[[LoopState, tuple[int, ...]], None]:
    """How a job's starting latents are made: noise, image-to-image, or inpainting."""
    if request.inpaint is not None:
        from heyim_desktop.core.inpaint import prepare_inpaint_latents

        return prepare_inpaint_latents
    return prepare_latents


def decode(components: Components, latents: torch.Tensor) -> npt.NDArray[np.float32]:
    decoded = components.vae_decode(latents / components.scaling_factor)
    images: npt.NDArray[np.float32] = (decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return images


@torch.inference_mode()
def run_loop(
    components: Components,
    request: GenerationRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    previews: bool = True,
    extensions: Sequence[Extension] = (),
    stage: Stage = Stage(),
) -> LoopOutput:
    """Run ``request`` (its seed resolved) through ``components``; images stay float.

    ``stage`` limits the run to part of the schedule (the two stages of a refined job).
    """
    if request.seed is None:
        raise ValueError("run_loop needs a request with a resolved seed (GenerationRequest.with_seed)")
    caps = components.capabilities
    check_request(caps, request, components.vae_scale_factor)
    cancel = cancel or CancelToken()
    device = components.device
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    cancel.raise_if_cancelled()
    use_cfg = request.uses_cfg and caps.guidance == "cfg"
    prompts = encode_request(components, request, with_negative=use_cfg)
    _sync(device)
    timings["text_encode"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    image = stage.image(components, request)
    if image.moments is not None:
        _sync(device)
        timings["image_encode"] = time.perf_counter() - t0

    prepare = latent_preparer(request)
    hooks: list[Extension] = [*extensions_for(request, components, prompts), *extensions]
    if progress is not None:
        hooks.append(ProgressReporter(progress, started=t_start, previews=previews, interval=PREVIEW_INTERVAL_S))
    seeds = request.image_seeds()
    batch = max(1, min(caps.max_batch, len(seeds)))
    groups = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]
    outputs: list[npt.NDArray[np.float32]] = []
    kept: list[torch.Tensor] = []
    timings["denoise"] = timings["decode"] = 0.0
    steps_done = 0
    steps_total: int | None = None
    h = request.height // components.vae_scale_factor
    w = request.width // components.vae_scale_factor
    for group_index, group in enumerate(groups):
        t0 = time.perf_counter()
        n = len(group)
        scheduler = build_scheduler(request.scheduler_name, components.scheduler_config)
        scheduler.set_timesteps(request.steps, device=device)
        guidance = build_guidance(
            caps.guidance if request.uses_cfg or caps.guidance == "embedded" else "none",
            scale=request.effective_guidance, cond=prompts.cond, uncond=prompts.uncond, n=n,
            embedding_dim=components.guidance_embedding_dim, device=device, dtype=components.dtype,
            weights=composed_weights(prompts),
        )
        generators = [torch.Generator("cpu").manual_seed(s) for s in group]
        state = LoopState(
            request=request, components=components, scheduler=scheduler, timesteps=scheduler.timesteps,
            latents=torch.empty(0), guidance=guidance, generators=generators, seeds=group,
            first_image=group_index * batch, image=image, steps_done=steps_done,
        )
        stage.prepare(state, (n, components.latent_channels, h, w), prepare)
        if steps_total is None:
            steps_total = len(state.timesteps) * len(groups)
        state.steps_total = steps_total
        step_kwargs = _step_kwargs(scheduler, generators)
        for hook in hooks:
            hook.before_loop(state)
        for i, t in enumerate(state.timesteps):
            if cancel.stop_sampling():  # interrupt or skip: decode what this image has so far
                break
            state.step_index, state.timestep = i, t
            call = UNetCall(
                scheduler.scale_model_input(guidance.batch(state.latents), t), t, guidance.text, guidance.timestep_cond
            )
            for hook in hooks:
                hook.before_unet(state, call)
            noise_pred = guidance.combine(components.unet(call))
            state.latents = scheduler.step(noise_pred, t, state.latents, **step_kwargs, return_dict=False)[0]
            steps_done += 1
            state.steps_done = steps_done
            for hook in hooks:
                hook.after_step(state)
        for hook in hooks:
            hook.after_loop(state)
        if not cancel.interrupted:
            cancel.raise_if_cancelled()
        _sync(device)
        t1 = time.perf_counter()
        timings["denoise"] += t1 - t0
        if stage.decodes:
            outputs.append(decode(components, state.latents))
        else:
            kept.append(state.latents)
        timings["decode"] += time.perf_counter() - t1
        if cancel.interrupted:  # the images made so far, this one partial, are the result
            break
    timings["total"] = time.perf_counter() - t_start
    if steps_done:
        timings["per_step"] = timings["denoise"] / steps_done
    images_out = np.concatenate(outputs, axis=0) if outputs else np.zeros((0, request.height, request.width, 3), np.float32)
    latents_out = torch.cat(kept) if kept else None
    made = len(images_out) if latents_out is None else len(latents_out)
    return LoopOutput(
        images=images_out,
        seeds=seeds[:made],
        timings=timings,
        warnings=list(prompts.warnings),
        truncated_prompt=prompts.truncated_prompt,
        truncated_negative=prompts.truncated_negative,
        interrupted=cancel.interrupted,
        latents=latents_out,
    )
