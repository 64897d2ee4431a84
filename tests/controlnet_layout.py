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


def controlnet_to_ldm(sd: dict, layers: int) -> dict:  # type: ignore[type-arg]
    """A diffusers ControlNet state dict in the original (lllyasviel) layout, ``control_model.`` keys."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    from ldm_layout import unet_to_ldm

    fixed = DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"]
    out = {}
    unet_part = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key in fixed:
            new = fixed[key]
        elif parts[0] == "controlnet_cond_embedding" and parts[1] == "blocks":
            new = f"input_hint_block.{2 * (int(parts[2]) + 1)}.{'.'.join(parts[3:])}"
        elif parts[0] == "controlnet_down_blocks":
            new = f"zero_convs.{parts[1]}.0.{'.'.join(parts[2:])}"
        elif parts[0] == "controlnet_mid_block":
            new = f"middle_block_out.0.{'.'.join(parts[1:])}"
        else:
            unet_part[key] = value
            continue
        out["control_model." + new] = value
    for key, value in unet_to_ldm(unet_part, layers).items():
        out["control_model." + key.removeprefix("model.diffusion_model.")] = value
    return out


def write_ldm_single_file(folder: Path, target: Path) -> Path:
    """The folder's ControlNet as one original-layout .safetensors, with its config beside it."""
    from safetensors.torch import load_file, save_file

    config = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.contiguous() for k, v in controlnet_to_ldm(state, config["layers_per_block"]).items()}, str(target))
    target.with_suffix(".json").write_text(json.dumps(config))
    return target
