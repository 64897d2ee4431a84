"""Full-size random-weight models of Z-Image Turbo, FLUX.2 [klein] 4B and SD 3.5 Medium (benchmarks only).

The architectures are the released models' (layer counts, widths, heads, vocabularies), the weights
are random bf16 and the tokenizers the tiny ones HeyIm writes on the spot (:mod:`heyim_desktop.core.
families.tiny`): nothing is downloaded, and the compute and memory of a generation are the real
model's. Each part is saved in diffusers' folder layout, as the loading code reads a downloaded model.

``depth`` keeps the width and cuts the transformer (and the text encoders) to that many layers: the
same working set per image (inference keeps one layer's activations at a time) with a fraction of the
weights, for measuring 1024x1024 on a machine that cannot hold the full model.

A built folder is cached under ``cache`` by the hash of its configuration and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: The released models' shapes (diffusers / transformers constructor arguments).
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
FLUX1_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                 up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                 layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
                 use_quant_conv=False, use_post_quant_conv=False)
ARCHS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "zimage": {  # Z-Image Turbo: 6.15B S3-DiT, Qwen3-4B, the FLUX.1 VAE
        "transformer": ("diffusers.ZImageTransformer2DModel", dict(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
            n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
            t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])),
        "text_encoder": ("transformers.Qwen3Model", QWEN3_4B),
        "vae": ("diffusers.AutoencoderKL", dict(FLUX1_VAE, scaling_factor=0.3611, shift_factor=0.1159)),
    },
    "flux2": {  # FLUX.2 [klein] 4B: 5 double + 20 single blocks, 3072 wide; Qwen3-4B; the FLUX.2 VAE
        "transformer": ("diffusers.Flux2Transformer2DModel", dict(
            patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=3 * 2560, timestep_guidance_channels=256, mlp_ratio=3.0,
            axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False)),
        "text_encoder": ("transformers.Qwen3ForCausalLM", QWEN3_4B),
        "vae": ("diffusers.AutoencoderKLFlux2", {}),
    },
    "sd3": {  # SD 3.5 Medium: 2.5B MMDiT-X, CLIP-L, OpenCLIP bigG, T5-XXL's encoder, the SD 3 VAE
        "transformer": ("diffusers.SD3Transformer2DModel", dict(
            sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")),
        "text_encoder": ("transformers.CLIPTextModelWithProjection", dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            projection_dim=768, vocab_size=49408, hidden_act="quick_gelu", max_position_embeddings=77)),
        "text_encoder_2": ("transformers.CLIPTextModelWithProjection", dict(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, vocab_size=49408, hidden_act="gelu", max_position_embeddings=77)),
        "text_encoder_3": ("transformers.T5EncoderModel", dict(
            d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)),
        "vae": ("diffusers.AutoencoderKL", dict(FLUX1_VAE, scaling_factor=1.5305, shift_factor=0.0609)),
    },
}
#: Released model names, for the tables.
LABELS = {"zimage": "Z-Image Turbo", "flux2": "FLUX.2 [klein] 4B", "sd3": "SD 3.5 Medium"}
#: Config keys holding a layer count, per class: what ``depth`` cuts.
_DEPTH_KEYS = {
    "ZImageTransformer2DModel": ("n_layers",), "Flux2Transformer2DModel": ("num_layers", "num_single_layers"),
    "SD3Transformer2DModel": ("num_layers",), "Qwen3Model": ("num_hidden_layers",),
    "Qwen3ForCausalLM": ("num_hidden_layers",), "CLIPTextModelWithProjection": ("num_hidden_layers",),
    "T5EncoderModel": ("num_layers",),
}


def arch(family: str, depth: int | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """The parts of ``family`` (``depth``: at most that many layers in each layered part)."""
    parts = {}
    for part, (path, kwargs) in ARCHS[family].items():
        kwargs = dict(kwargs)
        for key in _DEPTH_KEYS.get(path.rsplit(".", 1)[1], ()) if depth else ():
            kwargs[key] = min(int(kwargs[key]), int(depth or 0))
        if "dual_attention_layers" in kwargs and depth:
            kwargs["dual_attention_layers"] = tuple(i for i in kwargs["dual_attention_layers"] if i < depth)
        parts[part] = (path, kwargs)
    if family == "flux2" and depth:
        # FLUX.2 reads three Qwen3 layers; a shallow encoder gives one (flux2_text_layers): one layer's width
        path, kwargs = parts["transformer"]
        parts["transformer"] = (path, dict(kwargs, joint_attention_dim=2560))
    return parts


def parameters(family: str, depth: int | None = None) -> dict[str, int]:
    """Each part's parameter count, counted on the meta device (no memory)."""
    import torch

    counts = {}
    for part, (path, kwargs) in arch(family, depth).items():
        with torch.device("meta"):
            module = _construct(path, kwargs)
        counts[part] = sum(p.numel() for p in module.parameters())
    return counts


def _construct(path: str, kwargs: dict[str, Any]) -> Any:
    import importlib

    package, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(package), name)
    if package == "transformers":
        config_cls = getattr(importlib.import_module("transformers"), name.replace("ForCausalLM", "Model")
                             .replace("TextModelWithProjection", "TextModel").replace("EncoderModel", "Model")
                             .replace("Model", "Config"))
        return cls(config_cls(**kwargs))
    return cls(**kwargs)


def build(family: str, cache: Path, depth: int | None = None) -> Path:
    """The folder of ``family``'s full-size random model under ``cache``, built once (minutes, GBs)."""
    parts = arch(family, depth)
    digest = hashlib.sha256(json.dumps([family, parts], sort_keys=True, default=str).encode()).hexdigest()[:12]
    dest = cache / f"{family}-{'full' if not depth else f'{depth}l'}-{digest}"
    if (dest / "model_index.json").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=cache))
    try:
        _write(family, parts, tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write(family: str, parts: dict[str, tuple[str, dict[str, Any]]], tmp: Path) -> None:
    import gc

    import diffusers
    import torch

    from heyim_desktop.core.demo_model import write_tokenizer
    from heyim_desktop.core.families import tiny

    lib: Any = diffusers
    if family == "sd3":
        write_tokenizer(tmp / "tokenizer")
        write_tokenizer(tmp / "tokenizer_2")
        tiny.write_t5_tokenizer(tmp / "tokenizer_3")
        ids = json.loads((tmp / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
        for part in ("text_encoder", "text_encoder_2"):
            path, kwargs = parts[part]
            parts[part] = (path, dict(kwargs, bos_token_id=ids["<|startoftext|>"], eos_token_id=ids["<|endoftext|>"],
                                      pad_token_id=ids["<|endoftext|>"]))
    else:
        tiny.write_qwen_tokenizer(tmp / "tokenizer")
    lib.FlowMatchEulerDiscreteScheduler().save_pretrained(tmp / "scheduler")
    torch.manual_seed(0)
    for part, (path, kwargs) in parts.items():
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # built in bf16 at once: a 6B part in fp32 would not fit
        try:
            module = _construct(path, kwargs)
        finally:
            torch.set_default_dtype(previous)
        with torch.no_grad():
            for param in module.parameters():  # tensors created with torch.empty (pad tokens): make them sane
                if param.numel() < 1_000_000 and not bool(torch.isfinite(param).all()):
                    param.normal_(0.0, 0.02)
        module.save_pretrained(tmp / part, safe_serialization=True, max_shard_size="2GB")
        del module
        gc.collect()
    index = {**tiny._INDEX[family], "_diffusers_version": "0.42.1"}
    if family == "sd3":
        index.update(text_encoder_3=["transformers", "T5EncoderModel"], tokenizer_3=["transformers", "T5Tokenizer"])
    if family == "flux2":
        index["is_distilled"] = True  # the released 4B [klein]: one pass a step, guidance unused
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def folder_bytes(folder: Path) -> dict[str, int]:
    """The bytes of each part's safetensors files."""
    return {part.name: sum(f.stat().st_size for f in part.glob("*.safetensors"))
            for part in sorted(folder.iterdir()) if part.is_dir() and any(part.glob("*.safetensors"))}
