"""Tiny random LoRAs and embeddings for the tiny models, in the layouts people download."""

from __future__ import annotations

from pathlib import Path

import torch


def _peft_layers(module: torch.nn.Module, targets: list[str], rank: int, seed: int) -> dict[str, torch.Tensor]:
    """Random LoRA A/B weights for ``module``'s ``targets`` in PEFT naming (relative keys)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and any(name.endswith(t) for t in targets):
            out[f"{name}.lora_A.weight"] = torch.randn(rank, sub.in_features, generator=gen) * 0.3
            out[f"{name}.lora_B.weight"] = torch.randn(sub.out_features, rank, generator=gen) * 0.3
    return out


def write_lora(model_folder: Path, dest: Path, *, layout: str = "diffusers", rank: int = 4, seed: int = 0,
               text_encoder: bool = True) -> Path:
    """A random LoRA for the tiny SD model's UNet (and text encoder), as .safetensors."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    state: dict[str, torch.Tensor] = {}
    for k, v in _peft_layers(unet, ["to_q", "to_k", "to_v", "to_out.0"], rank, seed).items():
        state[f"unet.{k}"] = v
    if text_encoder:
        te = CLIPTextModel.from_pretrained(model_folder / "text_encoder")
        for k, v in _peft_layers(te, ["q_proj", "k_proj", "v_proj", "out_proj"], rank, seed + 1).items():
            state[f"text_encoder.{k}"] = v
    if layout == "kohya":
        state = _to_kohya(state, rank)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    return dest


def _to_kohya(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        base = ("lora_unet_" if prefix == "unet" else "lora_te_") + module.replace(".", "_")
        out[f"{base}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value
        out[f"{base}.alpha"] = torch.tensor(float(rank))
    return out


def write_embedding(dest: Path, *, width: int = 32, vectors: int = 2, seed: int = 0) -> Path:
    """An AUTOMATIC1111-layout textual-inversion embedding (``emb_params``)."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(vectors, width, generator=gen)}, str(dest))
    return dest
