"""Tiny random ControlNets for tests, in the diffusers folder and single-file layouts."""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_controlnet(model: Path, folder: Path, *, seed: int) -> Path:
    """ControlNetModel.from_unet on the tiny UNet, then every weight redrawn.

    ControlNets start with zero convolutions (they add nothing until trained); random
    weights there make a ControlNet whose residuals change the image, so tests can fail.
    """
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", local_files_only=True)
    net = ControlNetModel.from_unet(unet)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "norm" in name and name.endswith("weight"):
                continue
            param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    net.save_pretrained(folder, safe_serialization=True)
    return folder


def write_single_file(folder: Path, target: Path, *, sidecar: bool = True) -> Path:
    """The folder's ControlNet as one diffusers-layout .safetensors (+ <name>.json config)."""
    import shutil

    shutil.copyfile(folder / "diffusion_pytorch_model.safetensors", target)
    if sidecar:
        target.with_suffix(".json").write_text(json.dumps(json.loads((folder / "config.json").read_text())))
    return target
