"""ControlNet in Apple's Core ML layout: a ``ControlledUnet`` plus ``controlnet/<name>`` models.

A ControlNet model takes the UNet's ``sample``, ``timestep`` and ``encoder_hidden_states``
and a ``controlnet_cond`` image (B, 3, H, W) in [0, 1], and returns ``additional_residual_0``
.. ``additional_residual_{n-1}`` (the down blocks' residuals, then the middle block's). The
``ControlledUnet`` takes the same names as extra inputs and adds them to its skip connections;
fed zeros it is the plain UNet. The weight, guess mode ("ControlNet is more important") and
start/end are applied by the engine, as Apple's pipeline does.
"""

from __future__ import annotations

from typing import Any, Sequence

from heyim_desktop.core.coreml.modules import RESIDUAL_PREFIX, residual_names

#: Subfolder of a resources folder that holds the ControlNets (Apple's and Mochi Diffusion's).
CONTROLNET_FOLDER = "controlnet"

Inputs = Sequence[tuple[str, tuple[int, ...], Any]]


def controlnet_inputs(unet_inputs: Inputs, size: tuple[int, int]) -> list[tuple[str, tuple[int, ...], Any]]:
    """A ControlNet model's inputs: the UNet's first three and the control image at ``size`` (h, w)."""
    import numpy as np

    batch = unet_inputs[0][1][0]
    return [*unet_inputs[:3], ("controlnet_cond", (batch, 3, size[0], size[1]), np.float16)]


def residual_specs(net: Any, unet_inputs: Inputs, size: tuple[int, int]) -> list[tuple[str, tuple[int, ...], Any]]:
    """(name, shape, fp16) of each residual ``net`` returns for these inputs (one torch call)."""
    import numpy as np
    import torch

    from heyim_desktop.core.coreml.modules import ControlNetModule

    with torch.no_grad():
        outs = ControlNetModule(net)(*(torch.zeros(shape) for _, shape, _ in controlnet_inputs(unet_inputs, size)))
    return [(n, tuple(o.shape), np.float16) for n, o in zip(residual_names(len(outs)), outs)]


def residual_inputs(spec: Any) -> list[Any]:
    """A UNet spec's ``additional_residual_*`` inputs, in index order."""
    found = [t for t in spec.inputs if t.name.startswith(RESIDUAL_PREFIX) and t.name[len(RESIDUAL_PREFIX):].isdigit()]
    return sorted(found, key=lambda t: int(t.name[len(RESIDUAL_PREFIX):]))
