"""A tiny Stable Diffusion model with random weights, built on the spot.

It has the real architecture's shape (CLIP text encoder, conditional UNet, KL VAE with an
8x latent factor, a CLIP BPE tokenizer) at a fraction of the size, so the whole path runs
anywhere without downloading weights. Its images are abstract noise by design.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from heyim_desktop.core.storage import full_reason, storage_error

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "HeyIm demo (tiny random model)"
#: Words the demo tokenizer knows whole; anything else falls back to single characters.
_WORDS = (
    "a an the of and in on with photo painting portrait landscape red green blue fox cat dog "
    "tree forest city night sky sun mountain river sea house car flower woman man bird "
    "blurry ugly lowres"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet: printable bytes map to themselves, the rest are shifted.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(folder: Path) -> int:
    """Write vocab.json, merges.txt and the tokenizer config; return the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in _WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merged = a + b
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            if merged not in vocab:
                vocab[merged] = len(vocab)
            pieces = [merged] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return len(vocab)


def build_demo_model(destination: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny random model in diffusers format (safetensors) to ``destination``.

    The folder appears complete or not at all: it is built beside the target and renamed.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    dest = Path(destination)
    if dest.exists():
        if not overwrite and any(dest.iterdir()):
            raise FileExistsError(f"{dest} exists and is not empty")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-model-", dir=dest.parent))
    except OSError as exc:
        raise storage_error(exc, dest.parent, "the demo model") from exc
    try:
        vocab_size = write_tokenizer(tmp / "tokenizer")
        ids = json.loads((tmp / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=32,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=(32, 32, 64, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=256,
        )
        torch.manual_seed(seed)
        text_config = CLIPTextConfig(
            bos_token_id=ids["<|startoftext|>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        )
        text_encoder = CLIPTextModel(text_config)
        scheduler = PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            skip_prk_steps=True,
            set_alpha_to_one=False,
            steps_offset=1,
        )
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "_heyim_demo": True,
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(
            f"# {DEMO_MODEL_NAME}\n\nRandom weights: this model makes abstract noise. "
            "It exists so HeyIm runs end to end without downloading a real model.\n",
            encoding="utf-8",
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors reports a full disk as its own error type, with the OS error as text.
        if isinstance(exc, OSError) or (isinstance(exc, Exception) and full_reason(exc)):
            raise storage_error(exc, dest.parent, "the demo model") from exc
        raise
    log.info("demo model written to %s", dest)
    return dest


DEMO_SDXL_NAME = "HeyIm SDXL demo (tiny random model)"
#: SDXL's scheduler as Stability AI ships it (EulerDiscrete, leading spacing).
SDXL_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}
#: Text widths of the tiny SDXL's two encoders and its pooled width (ViT-L / bigG / 1280 at full size).
DEMO_SDXL_WIDTHS = (32, 64, 32)


def build_demo_sdxl_model(
    destination: str | os.PathLike[str], *, refiner: bool = False, seed: int = 0, overwrite: bool = False
) -> Path:
    """A tiny random SDXL (or SDXL refiner) in diffusers format: SDXL's layout at toy size.

    Two CLIP text encoders (the second with a projection, its tokenizer padding with ``!``),
    a UNet with ``addition_embed_type="text_time"`` (6 time ids; 5 with an aesthetic score for
    the refiner, which has the second encoder only) and SDXL's VAE scaling and fp16 upcast flag.
    Written beside ``destination`` and renamed, so it appears complete or not at all.
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    dest = Path(destination)
    if dest.exists() and not overwrite and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-sdxl-", dir=dest.parent))
    width_1, width_2, pooled = DEMO_SDXL_WIDTHS
    time_ids = 5 if refiner else 6
    try:
        encoders = ("tokenizer_2",) if refiner else ("tokenizer", "tokenizer_2")
        vocab_size = 0
        for name in encoders:
            vocab_size = write_tokenizer(tmp / name)
        config_2 = json.loads((tmp / "tokenizer_2" / "tokenizer_config.json").read_text(encoding="utf-8"))
        config_2["pad_token"] = "!"  # as SDXL's second tokenizer
        (tmp / "tokenizer_2" / "tokenizer_config.json").write_text(json.dumps(config_2, indent=2), encoding="utf-8")
        ids = json.loads((tmp / "tokenizer_2" / "vocab.json").read_text(encoding="utf-8"))

        def text_config(hidden: int, projection_dim: int = 512) -> CLIPTextConfig:
            return CLIPTextConfig(
                bos_token_id=ids["<|startoftext|>"], eos_token_id=ids["<|endoftext|>"], pad_token_id=1,
                hidden_size=hidden, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                num_hidden_layers=5, vocab_size=vocab_size, max_position_embeddings=77, projection_dim=projection_dim,
            )

        torch.manual_seed(seed)
        cross = width_2 if refiner else width_1 + width_2
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=time_ids * 8 + pooled, cross_attention_dim=cross, norm_num_groups=32,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=(32, 32, 64, 64), in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4, norm_num_groups=32, sample_size=256, scaling_factor=0.13025, force_upcast=True,
        )
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        if not refiner:
            torch.manual_seed(seed)
            CLIPTextModel(text_config(width_1)).save_pretrained(tmp / "text_encoder", safe_serialization=True)
        torch.manual_seed(seed + 1)
        CLIPTextModelWithProjection(text_config(width_2, projection_dim=pooled)).save_pretrained(
            tmp / "text_encoder_2", safe_serialization=True
        )
        EulerDiscreteScheduler.from_config(SDXL_SCHEDULER).save_pretrained(tmp / "scheduler")
        index: dict[str, object] = {
            "_class_name": "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline",
            "_diffusers_version": "0.30.0",
            "_heyim_demo": True,
            "force_zeros_for_empty_prompt": not refiner,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": [None, None] if refiner else ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": [None, None] if refiner else ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        if refiner:
            index["requires_aesthetics_score"] = True
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("tiny SDXL%s written to %s", " refiner" if refiner else "", dest)
    return dest
