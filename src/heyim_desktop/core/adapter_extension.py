"""T2I-Adapter units on the shared loop: their features added inside the UNet's down blocks.

A unit whose model is a T2I-Adapter (:func:`~heyim_desktop.core.t2i_adapter.is_adapter`) runs
its adapter once per job on the control map; the features, scaled by the unit's weight, go to
every UNet call as ``down_intrablock_additional_residuals`` on both halves of the guidance
batch, as diffusers' StableDiffusionAdapterPipeline does. Several adapters add their weighted
features (diffusers' MultiAdapter). The control modes follow the AUTOMATIC1111 extension's
adapter rules: "prompt" scales the features by :data:`SOFT_SCALES`, "controlnet" adds them to
the prompt half of the guidance batch only. Guidance start/end work as for ControlNets (the unit acts
on steps :func:`~heyim_desktop.core.controlnet.keep_factor` keeps); an end of ``f`` with start 0
is the SDXL adapter pipeline's ``adapter_conditioning_factor=f``. ControlNet units in the same
request add their residuals through :class:`~heyim_desktop.core.controlnet.ControlNetExtension`;
the UNet takes both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.extensions import BaseExtension, LoopState

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.components import Components
    from heyim_desktop.core.conditioning import UNetCall
    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.request import GenerationRequest

#: The AUTOMATIC1111 extension's adapter factors for "My prompt is more important".
SOFT_SCALES = (0.25, 0.62, 0.825, 1.0)
#: ITU-R 601 luma, as Pillow's "L" conversion: a one-channel adapter's input from an RGB map.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class _Features:
    unit: "ControlUnit"
    #: The adapter's features times their factors (:func:`feature_scales`), batch 1.
    scaled: "list[torch.Tensor]"


def feature_scales(unit: "ControlUnit", count: int) -> list[float]:
    """Each feature's factor: the weight, or for "My prompt is more important" the extension's
    soft weights for adapters (the weight times 0.25, 0.62, 0.825, 1.0, finest feature first)."""
    if unit.mode != "prompt":
        return [unit.weight] * count
    return [unit.weight * k for k in (*SOFT_SCALES, *([1.0] * max(0, count - len(SOFT_SCALES))))][:count]


class AdapterExtension(BaseExtension):
    """Adds the request's T2I-Adapter features to each UNet call."""

    def __init__(self, request: "GenerationRequest", components: "Components") -> None:
        import numpy as np
        import torch

        from heyim_desktop.core.controlnet import control_images

        loader = getattr(components, "adapter_model", None)
        if loader is None or not components.capabilities.controlnet:
            raise InvalidRequest("controlnet.model", "T2I-Adapters run on the PyTorch engine only (Apple's Core ML "
                                 "layout has no adapter inputs); use a ControlNet or the model's diffusers version")
        run = cast(Any, components).adapter_features  # the torch engine's, beside adapter_model
        latent_hw = (request.height // components.vae_scale_factor, request.width // components.vae_scale_factor)
        self.units: list[_Features] = []
        for unit, arr in zip(request.controlnets, control_images(request, str(components.device))):
            adapter = loader(unit.model)
            factor = int(adapter.config.downscale_factor)  # the adapter unshuffles the map by this
            if request.width % factor or request.height % factor:
                raise InvalidRequest("width", f"T2I-Adapter {unit.model_name} needs a width and height that are "
                                     f"multiples of {factor}, got {request.width}x{request.height}")
            image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
            if int(adapter.config.in_channels) == 1:
                image = image[:, 0:1] * _LUMA[0] + image[:, 1:2] * _LUMA[1] + image[:, 2:3] * _LUMA[2]
            image = image.to(device=components.device, dtype=adapter.dtype)
            features = run(adapter, image, latent_hw, unit.model_name)
            scales = feature_scales(unit, len(features))
            self.units.append(_Features(unit, [f * k for f, k in zip(features, scales)]))

    def before_unet(self, state: LoopState, call: "UNetCall") -> None:
        import torch

        from heyim_desktop.core.controlnet import keep_factor
        from heyim_desktop.core.guidance import ClassifierFree, Composable

        steps = len(state.timesteps)
        n = call.sample.shape[0]
        # The guidance batch starts with the negative prompt's rows (one chunk of ``chunks``).
        g = state.guidance
        chunks = 2 if isinstance(g, ClassifierFree) else len(g.weights) + 1 if isinstance(g, Composable) else 1
        negative = n // chunks if chunks > 1 else 0
        total: list[torch.Tensor] | None = None
        for f in self.units:
            if not keep_factor(state.step_index, steps, f.unit.start, f.unit.end):
                continue
            if f.unit.mode == "controlnet" and negative:  # the prompt's rows only, as the extension does
                part = [torch.cat([torch.zeros_like(t).expand(negative, *t.shape[1:]),
                                   t.expand(n - negative, *t.shape[1:])]) for t in f.scaled]
            else:
                part = [t.expand(n, *t.shape[1:]) for t in f.scaled]
            total = part if total is None else [a + b for a, b in zip(total, part)]
        if total is None:
            return
        if call.intrablock_residuals is not None:
            total = [a + b for a, b in zip(call.intrablock_residuals, total)]
        call.intrablock_residuals = total


def split_units(request: "GenerationRequest") -> "tuple[GenerationRequest | None, GenerationRequest | None]":
    """The request with only its ControlNet units, and with only its T2I-Adapter units (None: none)."""
    from pathlib import Path

    from heyim_desktop.core.t2i_adapter import is_adapter, is_original_layout

    # An original-layout adapter file goes to the adapter loader, which says what to use instead.
    kinds = [is_adapter(u.model) or is_original_layout(Path(u.model).expanduser()) for u in request.controlnets]
    if not any(kinds):
        return request, None
    adapters = tuple(u for u, a in zip(request.controlnets, kinds) if a)
    nets = tuple(u for u, a in zip(request.controlnets, kinds) if not a)
    return (request.replace(controlnets=nets) if nets else None), request.replace(controlnets=adapters)
