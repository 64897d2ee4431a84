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
from heyim_desktop.core.extensions import BaseExtension, LoopState
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
    #: An AUTOMATIC1111 interrupt stopped it: the images are what was made (the last one partial).
    interrupted: bool = False


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


# -- latent upscale: two extensions on the shared loop (its step loop is untouched) -----------------
class KeepLatents(BaseExtension):
    """Keeps each group's final latents (scaled, before decoding) for a later stage."""

    def __init__(self) -> None:
        self.kept: list["torch.Tensor"] = []

    def after_loop(self, state: LoopState) -> None:
        self.kept.append(state.latents.detach().cpu())

    def latents(self) -> "torch.Tensor":
        import torch

        return torch.cat(self.kept)


class StartFromLatents(BaseExtension):
    """Image-to-image from given latents instead of the encoded input image.

    As diffusers' img2img with a 4-channel ``image``: the latents (already scaled) are noised to
    the request's strength with noise drawn first from each image's seed, so the generators
    then step the scheduler exactly as diffusers' do. The loop's own image encode is skipped by
    :class:`_NoImageEncode`; its timesteps (cut to the strength) are kept.
    """

    def __init__(self, latents: "torch.Tensor") -> None:
        self.start = latents

    def before_loop(self, state: LoopState) -> None:
        from diffusers.utils.torch_utils import randn_tensor

        n = len(state.generators)
        device, dtype = state.components.device, state.components.dtype
        init = self.start[state.first_image : state.first_image + n].to(device=device, dtype=dtype)
        for generator, seed in zip(state.generators, state.seeds):
            generator.manual_seed(seed)  # in place: the scheduler's step arguments hold these objects
        gens: Any = state.generators if n > 1 else state.generators[0]
        noise = randn_tensor(init.shape, generator=gens, device=device, dtype=dtype)
        state.init_latents, state.noise = init, noise
        state.latents = state.scheduler.add_noise(init, noise, state.timesteps[:1].repeat(n))


class _NoImageEncode:
    """The engine's components, except that encoding the (stand-in) input image costs nothing."""

    def __init__(self, components: Components) -> None:
        self._inner = components

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def vae_encode(self, images: "torch.Tensor") -> "torch.Tensor":
        import torch

        vsf = self._inner.vae_scale_factor
        shape = (images.shape[0], 2 * self._inner.latent_channels, images.shape[2] // vsf, images.shape[3] // vsf)
        return torch.zeros(shape, device=images.device, dtype=images.dtype)


def run_img2img_from_latents(
    components: Components,
    request: GenerationRequest,
    latents: "torch.Tensor",
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    """The shared loop's image-to-image, started from ``latents`` (count, C, h, w) at the request's size.

    The entry point for a latent upscale. ``request`` must be image-to-image (its ``init_image``
    is a stand-in, never encoded).
    """
    from heyim_desktop.core.loop import run_loop

    if not request.is_img2img:
        raise ValueError("run_img2img_from_latents needs an image-to-image request")
    vsf = components.vae_scale_factor
    expected = (request.count, components.latent_channels, request.height // vsf, request.width // vsf)
    if tuple(latents.shape) != expected:
        raise ValueError(f"latents {tuple(latents.shape)} do not fit {expected}")
    return run_loop(_NoImageEncode(components), request, progress=progress, cancel=cancel,
                    extensions=[StartFromLatents(latents)])


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
    from heyim_desktop.core.loop import run_loop

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

    keep = KeepLatents()
    first = run_loop(components, request.replace(hires=None), progress=stage(0), cancel=cancel,
                     extensions=[keep] if latent else [])
    first_latents = keep.latents() if latent else None
    if first.interrupted:  # an interrupt during the first pass: its images are the result
        return HiresOutput(images=first.images, seeds=first.seeds, timings=dict(first.timings), warnings=first.warnings,
                           truncated_prompt=first.truncated_prompt, truncated_negative=first.truncated_negative,
                           interrupted=True)
    timings = {f"first_{k}": v for k, v in first.timings.items()}
    offset = first_total
    first_pil = floats_to_pil(first.images)
    t0 = time.perf_counter()
    model = UPSCALERS.get(hires.upscaler_path, components.device) if hires.upscaler_path else None
    starts: list[Any] = []
    for i, image in enumerate(first_pil):
        cancel.raise_if_cancelled()
        if latent:
            assert first_latents is not None
            vsf = components.vae_scale_factor
            starts.append(upscale_latents(first_latents[i : i + 1], (width // vsf, height // vsf), hires.upscaler))
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
            out = run_img2img_from_latents(components, req, start, progress=stage(i), cancel=cancel)
        else:
            out = run_loop(components, req, progress=stage(i), cancel=cancel)
        offset += per_image
        outputs.append(out.images)
        for key, value in out.timings.items():
            timings[f"second_{key}"] = timings.get(f"second_{key}", 0.0) + value
        if out.interrupted:
            break
    timings["total"] = time.perf_counter() - t_start
    interrupted = bool(cancel.interrupted)
    return HiresOutput(
        images=np.concatenate(outputs, axis=0).astype(np.float32),
        seeds=seeds[: len(outputs)],
        interrupted=interrupted,
        timings=timings,
        warnings=first.warnings,
        first_pass=first.images if hires.save_first_pass else None,
        truncated_prompt=first.truncated_prompt,
        truncated_negative=first.truncated_negative,
    )
