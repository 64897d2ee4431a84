"""T2I-Adapter units on the shared loop: their features added inside the UNet's down blocks.

A unit whose model is a T2I-Adapter (:func:`~heyim_desktop.core.t2i_adapter.is_adapter`) runs
its adapter once per job on the control map; the features, scaled by the unit's weight, go to
every UNet call as ``down_intrablock_additional_residuals`` on both halves of the guidance
batch, as diffusers' StableDiffusionAdapterPipeline does. Several adapters add their weighted
features (diffusers' MultiAdapter). Guidance start/end work as for ControlNets (the unit acts
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

#: ITU-R 601 luma, as Pillow's "L" conversion: a one-channel adapter's input from an RGB map.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class _Features:
    unit: "ControlUnit"
    #: The adapter's features times the unit's weight, batch 1.
    scaled: "list[torch.Tensor]"


def _refuse_modes(units: "tuple[ControlUnit, ...]") -> None:
    for i, unit in enumerate(units):
        if unit.mode != "balanced":
            raise InvalidRequest("controlnet.control_mode", f"unit {i}: T2I-Adapter {unit.model_name} takes the "
                                 "Balanced control mode only (its features are not split by prompt)")


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
        _refuse_modes(request.controlnets)
        run = cast(Any, components).adapter_features  # the torch engine's, beside adapter_model
        latent_hw = (request.height // components.vae_scale_factor, request.width // components.vae_scale_factor)
        self.units: list[_Features] = []
        for unit, arr in zip(request.controlnets, control_images(request, str(components.device))):
            adapter = loader(unit.model)
            image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
            if int(adapter.config.in_channels) == 1:
                image = image[:, 0:1] * _LUMA[0] + image[:, 1:2] * _LUMA[1] + image[:, 2:3] * _LUMA[2]
            image = image.to(device=components.device, dtype=adapter.dtype)
            features = run(adapter, image, latent_hw, unit.model_name)
            self.units.append(_Features(unit, [f * unit.weight for f in features]))

    def before_unet(self, state: LoopState, call: "UNetCall") -> None:
        from heyim_desktop.core.controlnet import keep_factor

        steps = len(state.timesteps)
        total: list[torch.Tensor] | None = None
        for f in self.units:
            if not keep_factor(state.step_index, steps, f.unit.start, f.unit.end):
                continue
            total = list(f.scaled) if total is None else [a + b for a, b in zip(total, f.scaled)]
        if total is None:
            return
        n = call.sample.shape[0]
        batched = [t.expand(n, *t.shape[1:]) for t in total]
        if call.intrablock_residuals is not None:
            batched = [a + b for a, b in zip(call.intrablock_residuals, batched)]
        call.intrablock_residuals = batched


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
