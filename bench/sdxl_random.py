"""Full-size SDXL base architecture with random weights (the cost of the released model).

Built from the configs HeyIm ships for single-file SDXL checkpoints (resources/model_configs/
sdxl), so the architecture is exactly what HeyIm loads: UNet 2.57B parameters, CLIP ViT-L and
OpenCLIP bigG text encoders, SDXL's VAE. Speed and memory depend on the architecture, not on
the weights' values. Each part is built, written and freed in turn to keep the peak low.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def build_sdxl_random(dest: Path, dtype_name: str = "float32") -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from heyim_desktop.core.checkpoint import profile_config_dir

    if (dest / "model_index.json").is_file():
        return dest
    config = profile_config_dir("sdxl")
    dtype = getattr(torch, dtype_name)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(config, tmp)  # configs, tokenizers, scheduler, model_index
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet")).to(dtype)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    del unet
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")).to(dtype)
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    del vae
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder", local_files_only=True)).to(dtype)
    te.save_pretrained(tmp / "text_encoder", safe_serialization=True)
    del te
    te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2", local_files_only=True))
    te2.to(dtype).save_pretrained(tmp / "text_encoder_2", safe_serialization=True)
    del te2
    EulerDiscreteScheduler.from_pretrained(config / "scheduler").save_pretrained(tmp / "scheduler")
    index = json.loads((tmp / "model_index.json").read_text(encoding="utf-8"))
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    tmp.rename(dest)
    return dest
