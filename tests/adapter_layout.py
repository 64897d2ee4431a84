"""Tiny random T2I-Adapters for tests, and a tiny SD whose UNet takes SD adapters' features.

The session's tiny SD UNet starts with a block without cross-attention, which adds its
feature after downsampling (as SDXL's does); SD 1.x/2.x UNets start with cross-attention blocks
(a feature before each downsampler). ``build_adapter_sd`` swaps in such a UNet, the shape
diffusers' own adapter tests use, so a ``full_adapter`` fits it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def build_adapter_sd(model: Path, folder: Path, *, seed: int = 3) -> Path:
    import torch
    from diffusers import UNet2DConditionModel

    shutil.copytree(model, folder)
    shutil.rmtree(folder / "unet")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def build_tiny_adapter(folder: Path, *, seed: int, xl: bool = False, in_channels: int = 3,
                       adapter_type: str | None = None) -> Path:
    """A T2IAdapter with channels (32, 64): ``full_adapter`` at 8 (SD) or ``full_adapter_xl`` at 16."""
    import torch
    from diffusers import T2IAdapter

    kind = adapter_type or ("full_adapter_xl" if xl else "full_adapter")
    channels = [32, 64] if kind != "light_adapter" else [32]
    adapter = T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=2,
                         downscale_factor=16 if kind == "full_adapter_xl" else 8, adapter_type=kind)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    adapter.save_pretrained(folder, safe_serialization=True)
    return folder


def write_adapter_file(folder: Path, target: Path, *, sidecar: bool = False) -> Path:
    """The folder's adapter as one diffusers-layout .safetensors (config beside it if ``sidecar``)."""
    shutil.copyfile(folder / "diffusion_pytorch_model.safetensors", target)
    if sidecar:
        target.with_suffix(".json").write_text(json.dumps(json.loads((folder / "config.json").read_text())))
    return target


def write_original_layout(folder: Path, target: Path) -> Path:
    """The folder's adapter with TencentARC's original key names (``conv_in``, ``body.K.block1``)."""
    import re

    from safetensors.torch import load_file, save_file

    blocks = json.loads((folder / "config.json").read_text())["num_res_blocks"]
    out = {}
    for key, value in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items():
        key = key.removeprefix("adapter.")
        key = re.sub(r"body\.(\d+)\.resnets\.(\d+)\.", lambda m: f"body.{int(m[1]) * blocks + int(m[2])}.", key)
        out[key] = value.contiguous()
    save_file(out, str(target))
    return target
