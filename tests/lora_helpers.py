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


# -- SDXL: kohya sd-scripts names SDXL's UNet modules in the original (SGM) layout --------------

_RESNET_SGM = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
               "conv_shortcut": "skip_connection"}
_TOP_SGM = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "time_embedding.linear_1": "time_embed.0",
            "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
            "add_embedding.linear_2": "label_emb.0.2"}


def sgm_name(diffusers_name: str, layers_per_block: int, up_has_attention: list[bool]) -> str:
    """The SGM (original SDXL) module path of a diffusers UNet module path, as kohya's SDXL UNet names it.

    Written from the SGM UNet's structure (input_blocks: conv_in, then per down block
    ``layers_per_block`` (resnet, attention) pairs and a downsampler; middle_block: resnet,
    attention, resnet; output_blocks: per up block ``layers_per_block + 1`` (resnet, attention,
    upsampler) triples), not from diffusers' converter, which the tests check it against.
    """
    if diffusers_name in _TOP_SGM:
        return _TOP_SGM[diffusers_name]
    parts = diffusers_name.split(".")
    step = layers_per_block + 1

    def inner(kind: str, rest: list[str]) -> str:
        if kind == "resnets":
            return ".".join([_RESNET_SGM.get(rest[0], rest[0]), *rest[1:]])
        return ".".join(rest)

    if parts[0] == "down_blocks":
        block, kind, idx, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * step}.0.op"
        slot = 0 if kind == "resnets" else 1
        return f"input_blocks.{1 + block * step + idx}.{slot}.{inner(kind, rest)}"
    if parts[0] == "mid_block":
        kind, idx, rest = parts[1], int(parts[2]), parts[3:]
        slot = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, idx)]
        return f"middle_block.{slot}.{inner(kind, rest)}"
    if parts[0] == "up_blocks":
        block, kind, idx, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "upsamplers":
            return f"output_blocks.{block * step + layers_per_block}.{2 if up_has_attention[block] else 1}.conv"
        slot = 0 if kind == "resnets" else 1
        return f"output_blocks.{block * step + idx}.{slot}.{inner(kind, rest)}"
    raise ValueError(f"no SGM name for {diffusers_name}")


UNET_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "mlp.fc1", "mlp.fc2"]


def _kohya_te_name(prefix: str, module: str) -> str:
    # kohya names CLIP modules from transformers' CLIPTextModel (text_model.encoder...).
    if not module.startswith("text_model."):
        module = "text_model." + module
    return prefix + module.replace(".", "_")


def write_sdxl_kohya_lora(model_folder: Path, dest: Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                          text_encoders: bool = True) -> Path:
    """A random LoRA for the tiny SDXL as kohya sd-scripts writes one: ``lora_unet_input_blocks_...``,
    ``lora_unet_middle_block_...``, ``lora_unet_output_blocks_...``, ``lora_te1_text_model_encoder_...``,
    ``lora_te2_...``, each module with ``lora_down``/``lora_up`` and a scalar ``alpha``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    lpb = int(unet.config.layers_per_block)
    up_attn = ["CrossAttn" in t for t in unet.config.up_block_types]
    state: dict[str, torch.Tensor] = {}

    for key, value in _peft_layers(unet, UNET_ATTENTION, rank, seed).items():
        module, kind = key.rsplit(".lora_", 1)
        base = "lora_unet_" + sgm_name(module, lpb, up_attn).replace(".", "_")
        state[f"{base}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.half()
        state[f"{base}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    if text_encoders:
        te1 = CLIPTextModel.from_pretrained(model_folder / "text_encoder")
        te2 = CLIPTextModelWithProjection.from_pretrained(model_folder / "text_encoder_2")
        for prefix, te, s in (("lora_te1_", te1, seed + 1), ("lora_te2_", te2, seed + 2)):
            for key, value in _peft_layers(te, TE_TARGETS, rank, s).items():
                module, kind = key.rsplit(".lora_", 1)
                base = _kohya_te_name(prefix, module)
                state[f"{base}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.half()
                state[f"{base}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return dest


def write_sdxl_diffusers_lora(model_folder: Path, dest: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A random LoRA for the tiny SDXL in the diffusers/PEFT layout (``unet.``, ``text_encoder.``, ``text_encoder_2.``)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    state = {f"unet.{k}": v for k, v in _peft_layers(unet, ["to_q", "to_k", "to_v", "to_out.0"], rank, seed).items()}
    te1 = CLIPTextModel.from_pretrained(model_folder / "text_encoder")
    te2 = CLIPTextModelWithProjection.from_pretrained(model_folder / "text_encoder_2")
    for prefix, te, s in (("text_encoder", te1, seed + 1), ("text_encoder_2", te2, seed + 2)):
        state.update({f"{prefix}.{k}": v for k, v in _peft_layers(te, ["q_proj", "k_proj", "v_proj", "out_proj"], rank, s).items()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    return dest


# -- LyCORIS LoHa / LoKr: made with peft's own LoHa/LoKr layers, which then serve as the reference ----

LYCO_UNET = r".*(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.2|proj_in|proj_out|resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|downsamplers\.0\.conv)$"
LYCO_TE = r".*(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$"
_LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
_LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def inject_peft_lycoris(module: torch.nn.Module, algo: str, adapter: str, *, targets: str, rank: int, alpha: float,
                        seed: int, std: float) -> dict[str, dict[str, torch.Tensor]]:
    """peft LoHa/LoKr layers on ``module`` (in place) with random weights; their parts by module path.

    LoHa uses peft's effective (Tucker) form on 3x3 convolutions; LoKr decomposes both factors
    where the rank allows (so the file mixes full ``lokr_w1`` and ``lokr_w1_a``/``_b`` layers) and
    uses the Tucker ``lokr_t2`` on 3x3 convolutions.
    """
    from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    if algo == "loha":
        config: object = LoHaConfig(r=rank, alpha=alpha, target_modules=targets, use_effective_conv2d=True)
    else:
        config = LoKrConfig(r=rank, alpha=alpha, target_modules=targets, use_effective_conv2d=True, decompose_both=True)
    inject_adapter_in_model(config, module, adapter_name=adapter)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    names = _LOHA_PARTS if algo == "loha" else _LOKR_PARTS
    for path, layer in module.named_modules():
        if not isinstance(layer, BaseTunerLayer) or not hasattr(layer, names[0]):
            continue
        found = {}
        for name in names:
            store = getattr(layer, name)
            if adapter in store:
                with torch.no_grad():
                    # fp16-representable, as the file stores them
                    store[adapter].copy_((torch.randn(store[adapter].shape, generator=gen) * std).half().float())
                found[name] = store[adapter].detach().clone()
        if found:
            parts[path.replace(".base_layer", "")] = found
    for layer in module.modules():  # every adapter injected so far active at once
        adapters = getattr(layer, "_available_adapters", None)
        if isinstance(layer, BaseTunerLayer) and adapters:
            layer.set_adapter(sorted(adapters))
    return parts


def set_peft_weight(module: torch.nn.Module, adapter: str, weight: float) -> None:
    """The user's weight on a peft LoHa/LoKr adapter (peft's scaling = weight * alpha / r)."""
    from peft.tuners.lycoris_utils import LycorisLayer

    for layer in module.modules():
        if isinstance(layer, LycorisLayer):
            layer.set_scale(adapter, weight)


def write_lycoris(dest: Path, layers: dict[str, dict[str, torch.Tensor]], *, algo: str, rank: int, alpha: float,
                  dtype: torch.dtype = torch.float16) -> Path:
    """A LyCORIS file (kohya module names -> parts, with ``alpha``) as LyCORIS saves one.

    LyCORIS applies no alpha to a LoKr layer with both factors full (peft does: alpha / r), so
    such layers carry peft's scale in ``lokr_w1``.
    """
    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    for name, parts in layers.items():
        parts = dict(parts)
        if algo == "lokr" and "lokr_w1_b" not in parts and "lokr_w2_b" not in parts:
            parts["lokr_w1"] = parts["lokr_w1"] * (alpha / rank)
        for part, value in parts.items():
            state[f"{name}.{part}"] = value.to(dtype).contiguous()
        state[f"{name}.alpha"] = torch.tensor(alpha, dtype=dtype)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest))
    return dest


def kohya_names(parts: dict[str, dict[str, torch.Tensor]], prefix: str, *, sgm: tuple[int, list[bool]] | None = None,
                text: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Module paths -> kohya names (``lora_unet_``/``lora_te_`` + underscores; SGM names for SDXL UNets)."""
    out = {}
    for path, value in parts.items():
        if sgm is not None:
            path = sgm_name(path, *sgm)
        if text and not path.startswith("text_model."):
            path = "text_model." + path
        out[prefix + path.replace(".", "_")] = value
    return out
