"""Multi-stage jobs built from the shared loop. Hires fix: txt2img -> upscale -> img2img.

Each stage is an ordinary :func:`~heyim_desktop.core.loop.run_loop` call (or an upscale), so the
result is exactly what running the three steps by hand gives with the same seeds: the first pass
at the request's size, the upscale of each image (a model, Lanczos/Nearest on the decoded image,
or AUTOMATIC1111's "Latent" modes on the latents), then image-to-image per image with that
image's seed, the same scheduler and guidance (no image-to-image guidance boost, as in
AUTOMATIC1111) and ``denoising_strength``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.components import Components
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.request import GenerationRequest, HiresFix
from heyim_desktop.core.result import Progress, ProgressCallback
from heyim_desktop.core.upscale import BUILTIN_UPSCALERS, LATENT_MODES, UpscalerModel, is_latent_mode, upscale_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class HiresOutput:
    """Final images (floats in [0, 1], N x H x W x 3) and, when asked, the first pass's."""

    images: npt.NDArray[np.float32]
    seeds: list[int]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    first_pass: npt.NDArray[np.float32] | None = None
    truncated_prompt: str | None = None
    truncated_negative: str | None = None


class _UpscalerCache:
    """The last upscaler model loaded, kept for the next hires job (one at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, float, str] | None = None
        self._model: UpscalerModel | None = None

    def get(self, path: str, device: "torch.device") -> UpscalerModel:
        from heyim_desktop.core.upscale import load_upscaler

        key = (str(Path(path).resolve()), Path(path).stat().st_mtime, str(device))
        with self._lock:
            if self._key != key or self._model is None:
                self._model = None
                self._model = load_upscaler(path, device=device)
                self._key = key
            return self._model


UPSCALERS = _UpscalerCache()


def second_pass_request(request: GenerationRequest, hires: HiresFix, init_image: "Image.Image", seed: int) -> GenerationRequest:
    """The image-to-image request of one image's second pass."""
    width, height = hires.target_size(request.width, request.height)
    return request.replace(
        width=width, height=height, seed=seed, count=1, init_image=init_image, hires=None,
        steps=hires.second_pass_steps(request.steps), strength=hires.denoising_strength,
        guidance_boost=0.0, scheduler=request.scheduler,
    )


def upscale_latents(latents: "torch.Tensor", size: tuple[int, int], mode: str) -> "torch.Tensor":
    """AUTOMATIC1111's latent upscale: interpolate (N, C, h, w) to ``size`` (latent w, h)."""
    import torch

    method, antialias = LATENT_MODES[mode]
    kwargs: dict[str, Any] = {"antialias": antialias} if method in ("bilinear", "bicubic") else {}
    if method in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
    return torch.nn.functional.interpolate(latents.float(), size=(size[1], size[0]), mode=method, **kwargs)


def check_hires(hires: HiresFix) -> None:
    if is_latent_mode(hires.upscaler) or hires.upscaler in BUILTIN_UPSCALERS:
        return
    if hires.upscaler_path is None:
        raise InvalidRequest("hires_upscaler", f"no upscaler named {hires.upscaler!r}")


def run_hires(
    components: Components,
    request: GenerationRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    tile_preference: int | None = None,
) -> HiresOutput:
    """Hires fix for ``request`` (its seed resolved and ``hires`` set)."""
    import torch

    from heyim_desktop.core.engine import floats_to_pil
    from heyim_desktop.core.loop import run_loop, run_loop_from_latents

    hires = request.hires
    if hires is None or request.seed is None:
        raise ValueError("run_hires needs a request with hires fix settings and a resolved seed")
    check_hires(hires)
    cancel = cancel or CancelToken()
    t_start = time.perf_counter()
    latent = is_latent_mode(hires.upscaler)
    width, height = hires.target_size(request.width, request.height)
    second_steps = hires.second_pass_steps(request.steps)
    refine = hires.denoising_strength > 0
    per_image = int(second_steps * hires.denoising_strength) if refine else 0
    # Progress over all stages: first-pass steps, one unit per image upscaled, second-pass steps.
    first_total = request.steps * request.count
    total = first_total + request.count + per_image * request.count
    offset = 0

    def report(p: Progress, index: int = 0) -> None:
        if progress is not None:
            step = min(offset + p.step, total)
            progress(Progress(step, total, time.perf_counter() - t_start, index, request.count, p.preview))

    def stage(index: int) -> ProgressCallback:
        return lambda p: report(p, index)

    first = run_loop(components, request.replace(hires=None), progress=stage(0), cancel=cancel, keep_latents=latent)
    timings = {f"first_{k}": v for k, v in first.timings.items()}
    offset = first_total
    first_pil = floats_to_pil(first.images)
    t0 = time.perf_counter()
    model = UPSCALERS.get(hires.upscaler_path, components.device) if hires.upscaler_path else None
    starts: list[Any] = []
    for i, image in enumerate(first_pil):
        cancel.raise_if_cancelled()
        if latent:
            assert first.latents is not None
            vsf = components.vae_scale_factor
            starts.append(upscale_latents(first.latents[i : i + 1], (width // vsf, height // vsf), hires.upscaler))
        else:
            outcome = upscale_image(image, size=(width, height), upscaler=hires.upscaler, model=model,
                                    tile_preference=tile_preference, cancel=cancel)
            starts.append(outcome.image)
        offset += 1
        report(Progress(0, 1, 0.0), i)
    timings["upscale"] = time.perf_counter() - t0
    outputs: list[npt.NDArray[np.float32]] = []
    seeds = first.seeds
    for i, (seed, start) in enumerate(zip(seeds, starts)):
        if not refine:
            if latent:
                with torch.inference_mode():
                    decoded = components.vae_decode(start.to(components.device, components.dtype) / components.scaling_factor)
                outputs.append((decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
            else:
                outputs.append(np.asarray(start, dtype=np.float32)[None] / 255.0)
            continue
        stand_in = start if not latent else first_pil[i].resize((width, height))
        req = second_pass_request(request, hires, stand_in, seed)
        if latent:
            out = run_loop_from_latents(components, req, start, progress=stage(i), cancel=cancel)
        else:
            out = run_loop(components, req, progress=stage(i), cancel=cancel)
        offset += per_image
        outputs.append(out.images)
        for key, value in out.timings.items():
            timings[f"second_{key}"] = timings.get(f"second_{key}", 0.0) + value
    timings["total"] = time.perf_counter() - t_start
    return HiresOutput(
        images=np.concatenate(outputs, axis=0).astype(np.float32),
        seeds=seeds,
        timings=timings,
        warnings=first.warnings,
        first_pass=first.images if hires.save_first_pass else None,
        truncated_prompt=first.truncated_prompt,
        truncated_negative=first.truncated_negative,
    )
