"""Inpainting on the shared loop: the mask's latents, the two repaint paths, and the job plan.

Which path runs is the model's capability, never the caller's choice: an inpainting UNet
(9 input channels, ``Capabilities.inpaint == "concat"``) gets the mask and the masked
image's latents stacked onto its input (:class:`InpaintConcat`); any other UNet repaints by
blending the kept area back after each step, noised to the next timestep
(:class:`MaskBlend`). Both follow diffusers' StableDiffusionInpaintPipeline step for step,
including the order in which the seed's random numbers are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import numpy.typing as npt
import torch
from diffusers.utils.torch_utils import randn_tensor

from heyim_desktop.core.conditioning import ImageCond, UNetCall
from heyim_desktop.core.extensions import BaseExtension, LoopState
from heyim_desktop.core.masking import (
    InpaintSpec,
    check_not_empty,
    crop_region,
    fill_masked,
    outpaint_canvas,
    paste_back,
    pil_to_float,
    prepare_mask,
)

if TYPE_CHECKING:
    from PIL import Image

    from heyim_desktop.core.components import Components
    from heyim_desktop.core.request import GenerationRequest

MASK_KEY = "inpaint_mask"
MASKED_KEY = "inpaint_masked_latents"


def _mask_tensor(spec: InpaintSpec, width: int, height: int) -> torch.Tensor:
    """(1, 1, H, W) binary mask at the image's size (1 = repaint), as diffusers binarises it."""
    arr = prepare_mask(spec, width, height)
    return torch.from_numpy((arr >= 0.5).astype(np.float32))[None, None]


def encode_inpaint_image(components: "Components", request: "GenerationRequest") -> ImageCond:
    """The input image's VAE moments, the mask at latent size, and (an inpainting UNet's extra
    input) the masked image's moments. The blending path never reads the masked image's latents,
    so it skips that encode: :func:`prepare_inpaint_latents` only draws the numbers diffusers
    spends on them, to keep the seed's stream in step."""
    from heyim_desktop.core.loop import image_to_tensor

    assert request.inpaint is not None
    device, dtype = components.device, components.dtype
    pixels = image_to_tensor(request.init_image, request.width, request.height)
    mask = _mask_tensor(request.inpaint, request.width, request.height)
    moments = components.vae_encode(pixels.to(device=device, dtype=dtype))
    masked_moments = None
    if components.capabilities.inpaint == "concat":
        masked = pixels * (mask < 0.5)
        masked_moments = components.vae_encode(masked.to(device=device, dtype=dtype))
    f = components.vae_scale_factor
    latent_mask = torch.nn.functional.interpolate(mask, size=(request.height // f, request.width // f))
    return ImageCond(moments=moments, mask=latent_mask.to(device=device, dtype=dtype), masked_moments=masked_moments)


def prepare_inpaint_latents(state: LoopState, shape: tuple[int, ...]) -> None:
    """Starting latents for inpainting, drawing the seed's numbers in diffusers' order."""
    from heyim_desktop.core.loop import img2img_start, sample_moments

    components, scheduler, request = state.components, state.scheduler, state.request
    image = state.image
    concat = components.capabilities.inpaint == "concat"
    assert image.moments is not None and image.mask is not None
    assert request.inpaint is not None and (image.masked_moments is not None or not concat)
    gens = state.generators
    gen_arg: Any = gens if len(gens) > 1 else gens[0]
    device, dtype = components.device, components.dtype
    state.timesteps = img2img_start(request, scheduler, state.timesteps)
    strength_max = request.strength == 1.0
    init = None
    if not concat or not strength_max:
        init = sample_moments(image.moments, gens, components.scaling_factor)
    noise = randn_tensor(shape, generator=gen_arg, device=device, dtype=dtype)
    n = shape[0]
    mask = image.mask.expand(n, -1, -1, -1)
    fill = request.inpaint.fill
    if init is not None and fill == "latent noise":
        init = init * (1 - mask) + noise * mask
    elif init is not None and fill == "latent nothing":
        init = init * (1 - mask)
    if strength_max:
        state.latents = noise * scheduler.init_noise_sigma
    else:
        assert init is not None
        state.latents = scheduler.add_noise(init, noise, state.timesteps[:1].repeat(n))
    state.init_latents, state.noise = init, noise
    state.scratch[MASK_KEY] = mask
    if image.masked_moments is not None:
        state.scratch[MASKED_KEY] = sample_moments(image.masked_moments, gens, components.scaling_factor)
    else:  # diffusers samples the masked image's latents here, unused on this path: same draws, no encode
        moments = image.moments
        shape = (1, moments.shape[1] // 2, *moments.shape[2:])
        for g in gens:
            randn_tensor(shape, generator=g, device=moments.device, dtype=moments.dtype)


class MaskBlend(BaseExtension):
    """Ordinary (4-channel) models: after each step, the kept area goes back to the input's latents."""

    def after_step(self, state: LoopState) -> None:
        mask = state.scratch[MASK_KEY]
        proper = state.init_latents
        assert proper is not None and state.noise is not None
        i = state.step_index
        if i < len(state.timesteps) - 1:
            proper = state.scheduler.add_noise(proper, state.noise, state.timesteps[i + 1 : i + 2])
        state.latents = (1 - mask) * proper + mask * state.latents


class InpaintConcat(BaseExtension):
    """Inpainting (9-channel) models: the mask and the masked image's latents join the UNet's input."""

    def before_unet(self, state: LoopState, call: UNetCall) -> None:
        mask, masked = state.scratch[MASK_KEY], state.scratch[MASKED_KEY]
        reps = call.sample.shape[0] // mask.shape[0]
        extra = torch.cat([mask, masked], dim=1)
        call.concat = torch.cat([extra] * reps) if reps > 1 else extra


def inpaint_extensions(request: "GenerationRequest", components: "Components") -> list[BaseExtension]:
    if request.inpaint is None:
        return []
    return [InpaintConcat()] if components.capabilities.inpaint == "concat" else [MaskBlend()]


# -- the job around the loop: outpainting's canvas, "only masked", paste-back ------------


@dataclass(frozen=True)
class EditPlan:
    """What the loop runs for an inpainting job, and how its images become the result."""

    #: The request the loop runs: image and mask already at the loop's size, mask prepared.
    request: "GenerationRequest"
    #: The request recorded with the result (outpainting: the grown size).
    result_request: "GenerationRequest"
    finish: Callable[["npt.NDArray[np.float32]"], "npt.NDArray[np.float32]"]


def _identity(images: "npt.NDArray[np.float32]") -> "npt.NDArray[np.float32]":
    return images


def _prepared_spec(spec: InpaintSpec, mask: "npt.NDArray[np.float32]") -> InpaintSpec:
    from PIL import Image

    img = Image.fromarray((mask * 255).round().astype(np.uint8), mode="L")
    return replace(spec, mask=img, blur=0, invert=False)


def plan_edit(request: "GenerationRequest") -> EditPlan:
    """The loop's request and the paste-back for an inpainting or outpainting job (else as is)."""
    from heyim_desktop.core.images import fit_to_size
    from heyim_desktop.core.masking import InpaintSpec as Spec

    if request.inpaint is None and request.extend is None:
        return EditPlan(request, request, _identity)
    assert request.init_image is not None and request.seed is not None
    if request.extend is not None:
        ext = request.extend
        base = fit_to_size(request.init_image.convert("RGB"), request.width, request.height)
        canvas, mask_img = outpaint_canvas(base, ext, request.seed)
        user = request.inpaint
        if user is not None:  # a mask painted on the picture too: repainted along with the new border
            from PIL import Image

            grown_mask = np.asarray(mask_img, dtype=np.float32) / 255.0
            inside = grown_mask[ext.top : ext.top + base.height, ext.left : ext.left + base.width]
            inside[...] = np.maximum(inside, prepare_mask(user, base.width, base.height))
            mask_img = Image.fromarray((grown_mask * 255).round().astype(np.uint8), mode="L")
        grown = Spec(
            mask=mask_img, blur=0, fill=user.fill if user else "original",
            keep_unmasked=user.keep_unmasked if user else True,
        )
        request = request.replace(
            width=canvas.width, height=canvas.height, init_image=canvas, inpaint=grown, extend=None,
        )
    spec = request.inpaint
    assert spec is not None and request.init_image is not None
    if spec.only_masked:
        return _plan_only_masked(request, spec)
    image = fit_to_size(request.init_image.convert("RGB"), request.width, request.height)
    mask = prepare_mask(spec, request.width, request.height)
    check_not_empty(mask)
    loop_image = fill_masked(image, mask) if spec.fill == "fill" else image
    loop_request = request.replace(init_image=loop_image, inpaint=_prepared_spec(spec, mask))
    if not spec.keep_unmasked:
        return EditPlan(loop_request, request, _identity)
    original = pil_to_float(image)

    def finish(images: "npt.NDArray[np.float32]") -> "npt.NDArray[np.float32]":
        return np.stack([paste_back(img, original, mask) for img in images])

    return EditPlan(loop_request, request, finish)


def _plan_only_masked(request: "GenerationRequest", spec: InpaintSpec) -> EditPlan:
    """AUTOMATIC1111's "Only masked": repaint a crop around the mask at the request's size."""
    from PIL import Image

    assert request.init_image is not None
    canvas = request.init_image.convert("RGB")
    mask = prepare_mask(spec, canvas.width, canvas.height)
    check_not_empty(mask)
    x1, y1, x2, y2 = crop_region(mask, spec.padding, (request.width, request.height))
    crop = canvas.crop((x1, y1, x2, y2))
    if spec.fill == "fill":
        crop = fill_masked(crop, mask[y1:y2, x1:x2])
    crop_mask = Image.fromarray((mask[y1:y2, x1:x2] * 255).round().astype(np.uint8), mode="L")
    size = (request.width, request.height)
    loop_image = crop.resize(size, Image.Resampling.LANCZOS)
    loop_mask = np.asarray(crop_mask.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    check_not_empty(loop_mask)
    loop_request = request.replace(init_image=loop_image, inpaint=_prepared_spec(spec, loop_mask))
    if request.controlnets:  # their own control images are cropped with the input image
        from heyim_desktop.core.controlnet import crop_control_images

        loop_request = loop_request.replace(
            controlnets=crop_control_images(request.controlnets, canvas.size, (x1, y1, x2, y2), size))
    original = pil_to_float(canvas)

    def finish(images: "npt.NDArray[np.float32]") -> "npt.NDArray[np.float32]":
        out = []
        for img in images:
            patch = Image.fromarray((img * 255).round().clip(0, 255).astype(np.uint8), mode="RGB")
            patch_f = pil_to_float(patch.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS))
            full = original.copy()
            if spec.keep_unmasked:
                full[y1:y2, x1:x2] = paste_back(patch_f, original[y1:y2, x1:x2], mask[y1:y2, x1:x2])
            else:
                full[y1:y2, x1:x2] = patch_f
            out.append(full)
        return np.stack(out)

    return EditPlan(loop_request, request, finish)


def mask_preview(spec: InpaintSpec, width: int, height: int) -> "Image.Image":
    """The prepared mask as an image (for the window's overlay and for history)."""
    from PIL import Image

    arr = prepare_mask(spec, width, height)
    return Image.fromarray((arr * 255).round().astype(np.uint8), mode="L")
