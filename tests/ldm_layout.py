"""Writing a diffusers-format model as an original-layout (LDM / A1111) single-file checkpoint.

Written for tests from the SD block structure (and checked by round-tripping through diffusers'
own LDM -> diffusers conversion): it covers the UNet/VAE/CLIP shapes Stable Diffusion 1.x uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(sd: dict[str, Any], layers: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("time_embedding",):
            new = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + ".".join(parts[2:])
        elif parts[0] == "add_embedding":  # SDXL's pooled-text + time-id embedding
            new = {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"}[parts[1]] + "." + ".".join(parts[2:])
        elif parts[0] == "conv_in":
            new = "input_blocks.0.0." + ".".join(parts[1:])
        elif parts[0] == "conv_norm_out":
            new = "out.0." + ".".join(parts[1:])
        elif parts[0] == "conv_out":
            new = "out.2." + ".".join(parts[1:])
        elif parts[0] == "down_blocks":
            i, kind = int(parts[1]), parts[2]
            rest = ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{3 * (i + 1)}.0.op.{'.'.join(parts[5:])}"
            else:
                j = int(parts[3])
                idx = 3 * i + j + 1
                new = f"input_blocks.{idx}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
        elif parts[0] == "mid_block":
            j, rest = int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}.{_rename(rest, RESNET)}" if parts[1] == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
                new = f"output_blocks.{(layers + 1) * i + layers}.{2 if has_attn else 1}.conv.{'.'.join(parts[5:])}"
            else:
                j, rest = int(parts[3]), ".".join(parts[4:])
                idx = (layers + 1) * i + j
                new = f"output_blocks.{idx}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
        else:
            raise KeyError(key)
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd: dict[str, Any]) -> dict[str, Any]:
    n_up = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks."))
    out: dict[str, Any] = {}
    for key, value in sd.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{side}.norm_out.{'.'.join(parts[2:])}"
        elif parts[1] == "mid_block":
            j, rest = int(parts[3]), ".".join(parts[4:])
            if parts[2] == "resnets":
                new = f"{side}.mid.block_{j + 1}.{_rename(rest, VAE_RESNET)}"
            else:
                new = f"{side}.mid.attn_1.{_rename(rest, VAE_ATTN)}"
                if value.ndim == 2:  # LDM keeps attention projections as 1x1 convolutions
                    value = value[:, :, None, None]
        elif parts[1] in ("down_blocks", "up_blocks"):
            i = int(parts[2])
            level, name = (i, "down") if parts[1] == "down_blocks" else (n_up - 1 - i, "up")
            if parts[3] in ("downsamplers", "upsamplers"):
                new = f"{side}.{name}.{level}.{'downsample' if name == 'down' else 'upsample'}.conv.{'.'.join(parts[6:])}"
            else:
                new = f"{side}.{name}.{level}.block.{parts[4]}.{_rename('.'.join(parts[5:]), VAE_RESNET)}"
        else:
            raise KeyError(key)
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict[str, Any]) -> dict[str, Any]:
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in sd.items()}


def write_single_file(model_dir: Path, dest: Path) -> Path:
    """Write ``model_dir`` (diffusers format) as one original-layout ``.safetensors`` file."""
    import json

    from safetensors.torch import load_file, save_file

    layers = json.loads((model_dir / "unet" / "config.json").read_text())["layers_per_block"]
    state: dict[str, Any] = {}
    state.update(unet_to_ldm(load_file(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors")), layers))
    state.update(vae_to_ldm(load_file(str(model_dir / "vae" / "diffusion_pytorch_model.safetensors"))))
    state.update(clip_to_ldm(load_file(str(model_dir / "text_encoder" / "model.safetensors"))))
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    return dest


OPEN_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_to_ldm(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A transformers CLIPTextModelWithProjection in OpenCLIP's layout (SDXL's bigG embedder).

    OpenCLIP keeps q, k and v as one ``in_proj`` matrix and the projection as (width, dim).
    """
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key == "text_model.embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("text_model.encoder.layers."):
            layer, rest = key[len("text_model.encoder.layers."):].split(".", 1)
            block = f"{prefix}transformer.resblocks.{layer}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                kind = rest.rsplit(".", 1)[1]  # weight or bias
                fused.setdefault(f"{block}attn.in_proj_{kind}", {})[rest.split(".")[1]] = value
            else:
                out[block + _rename(rest, OPEN_CLIP_LAYER)] = value
        elif key.endswith("position_ids"):
            continue
        else:
            raise KeyError(key)
    for key, qkv in fused.items():
        out[key] = torch.cat([qkv["q_proj"], qkv["k_proj"], qkv["v_proj"]], dim=0)
    return out


def write_sdxl_single_file(model_dir: Path, dest: Path) -> Path:
    """Write a diffusers-format SDXL base (or refiner) as one original-layout ``.safetensors`` file.

    The base keeps CLIP ViT-L as ``conditioner.embedders.0.transformer.*`` and OpenCLIP bigG as
    ``conditioner.embedders.1.model.*``; the refiner has bigG alone, as embedder 0.
    """
    import json

    from safetensors.torch import load_file, save_file

    layers = json.loads((model_dir / "unet" / "config.json").read_text())["layers_per_block"]
    state: dict[str, Any] = {}
    state.update(unet_to_ldm(load_file(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors")), layers))
    state.update(vae_to_ldm(load_file(str(model_dir / "vae" / "diffusion_pytorch_model.safetensors"))))
    big_g = load_file(str(model_dir / "text_encoder_2" / "model.safetensors"))
    if (model_dir / "text_encoder").is_dir():
        clip = load_file(str(model_dir / "text_encoder" / "model.safetensors"))
        state.update({"conditioner.embedders.0.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
                      for k, v in clip.items()})
        state.update(open_clip_to_ldm(big_g, "conditioner.embedders.1.model."))
    else:
        state.update(open_clip_to_ldm(big_g, "conditioner.embedders.0.model."))
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    return dest
