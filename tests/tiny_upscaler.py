"""A random-weight Real-ESRGAN-architecture (RRDBNet) model, built with spandrel's own class."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from heyim_desktop.core.upscale import import_spandrel


def make_esrgan(folder: Path, scale: int, *, seed: int = 0) -> tuple[Path, Path]:
    """A random-weight Real-ESRGAN-architecture (RRDBNet) model as .safetensors and as .pth."""
    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    st = folder / f"RealESRGAN_x{scale}_tiny.safetensors"
    save_file(state, str(st))
    pth = folder / f"RealESRGAN_x{scale}_tiny.pth"
    torch.save({"params_ema": state} if scale == 4 else state, pth)
    return st, pth
