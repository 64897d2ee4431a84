"""Two-stage jobs: a base model denoises the first part of the schedule, a refiner the rest.

Both stages run the shared loop; :class:`~heyim_desktop.core.loop.Stage` says where each
stops or resumes. The arithmetic is diffusers': the base runs with ``denoising_end=switch``
and hands over its latents undecoded, the refiner (its own text encoder, time ids and
scheduler config) resumes with ``denoising_start=switch`` and decodes. Each stage seeds its
own generators from the image's seed, as two separate diffusers calls with fresh generators.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loop import LoopOutput, Stage, _cutoff, decode, img2img_start, run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress, ProgressCallback
from heyim_desktop.core.schedulers import build_scheduler

if TYPE_CHECKING:
    from heyim_desktop.core.components import Components


def stage_steps(
    components: "Components", request: GenerationRequest, *, start: float | None = None, end: float | None = None
) -> int:
    """UNet steps a stage from ``start`` to ``end`` takes per image group, counted as the loop runs them."""
    import torch

    scheduler = build_scheduler(request.scheduler_name, components.scheduler_config)
    scheduler.set_timesteps(request.steps, device=torch.device("cpu"))
    timesteps = scheduler.timesteps
    if start is not None:
        count = int((timesteps < _cutoff(scheduler, start)).sum().item())
        return count + (1 if scheduler.order == 2 and count % 2 == 0 else 0)
    if request.is_img2img:
        timesteps = img2img_start(request, scheduler, timesteps)
    if end is not None:
        cutoff = _cutoff(scheduler, end)
        return sum(1 for t in timesteps if t >= cutoff)
    return len(timesteps)


def _groups(components: "Components", request: GenerationRequest) -> int:
    batch = max(1, min(components.capabilities.max_batch, request.count))
    return math.ceil(request.count / batch)


def run_refined(
    base: "Components",
    refiner: "Components",
    request: GenerationRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    previews: bool = True,
) -> LoopOutput:
    """``request`` on ``base`` up to ``request.refiner_switch``, then on ``refiner`` to the end."""
    if refiner.latent_channels != base.latent_channels or refiner.vae_scale_factor != base.vae_scale_factor:
        raise InvalidRequest("refiner", "the refiner's latents do not match the base model's (pick an SDXL refiner for an SDXL model)")
    fixed = refiner.capabilities.fixed_size
    if fixed is not None and (request.width, request.height) != fixed:  # before the base stage runs, not after
        raise InvalidRequest("refiner", f"the refiner only makes {fixed[0]}x{fixed[1]} images (a Core ML model's fixed "
                                        f"size), got {request.width}x{request.height}; pick that size or another refiner")
    switch = request.refiner_switch
    steps_1 = stage_steps(base, request, end=switch) * _groups(base, request)
    steps_2 = stage_steps(refiner, request, start=switch) * _groups(refiner, request)
    if steps_1 < 1 or steps_2 < 1:
        which = "base model" if steps_1 < 1 else "refiner"
        raise InvalidRequest(
            "refiner_switch",
            f"switching at {switch:g} of {request.steps} steps leaves the {which} no step; move the switch or add steps",
        )
    total = steps_1 + steps_2

    def relay(offset: int) -> ProgressCallback | None:
        if progress is None:
            return None
        report = progress

        def forward(p: Progress) -> None:
            report(Progress(offset + p.step, total, p.elapsed, p.image_index, p.image_count, p.preview))

        return forward

    cancel = cancel or CancelToken()
    first = run_loop(base, request, progress=relay(0), cancel=cancel, previews=previews, stage=Stage(end=switch))
    assert first.latents is not None
    if first.interrupted:  # stopped during the base stage: its images so far, decoded, are the result
        return LoopOutput(
            images=decode(base, first.latents), seeds=first.seeds, timings=first.timings, warnings=first.warnings,
            truncated_prompt=first.truncated_prompt, truncated_negative=first.truncated_negative, interrupted=True,
        )
    second = run_loop(
        refiner, request, progress=relay(steps_1), cancel=cancel, previews=previews,
        stage=Stage(start=switch, latents=first.latents),
    )
    timings = {f"base_{k}": v for k, v in first.timings.items()}
    timings.update({f"refiner_{k}": v for k, v in second.timings.items()})
    timings["total"] = first.timings.get("total", 0.0) + second.timings.get("total", 0.0)
    timings["denoise"] = first.timings.get("denoise", 0.0) + second.timings.get("denoise", 0.0)
    timings["decode"] = second.timings.get("decode", 0.0)
    timings["per_step"] = timings["denoise"] / total
    warnings = list(dict.fromkeys([*first.warnings, *second.warnings]))
    return LoopOutput(
        images=np.asarray(second.images, dtype=np.float32),
        seeds=second.seeds,
        timings=timings,
        warnings=warnings,
        truncated_prompt=first.truncated_prompt or second.truncated_prompt,
        truncated_negative=first.truncated_negative or second.truncated_negative,
        interrupted=second.interrupted,
    )

