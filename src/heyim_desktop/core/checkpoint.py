"""Telling which Stable Diffusion a single-file checkpoint is, from its header alone (no torch).

A1111-style checkpoints keep the original (LDM) key names: ``model.diffusion_model.*`` for the
UNet, ``first_stage_model.*`` for the VAE and ``cond_stage_model.*`` (SD 1.x/2.x) or
``conditioner.embedders.*`` (SDXL) for the text encoders. Shapes pick the config that HeyIm
ships for each family (``resources/model_configs``), so nothing is ever fetched.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import SafetensorsHeader

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
CROSS_ATTN_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
CLIP_TOKENS = (
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "cond_stage_model.transformer.embeddings.token_embedding.weight",
)
OPEN_CLIP_TOKENS = "cond_stage_model.model.token_embedding.weight"
#: SDXL: CLIP ViT-L (base only) and OpenCLIP bigG (embedder 1 in the base, 0 in the refiner).
SDXL_CLIP_TOKENS = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
SDXL_OPEN_CLIP_TOKENS = "conditioner.embedders.1.model.token_embedding.weight"
REFINER_OPEN_CLIP_TOKENS = "conditioner.embedders.0.model.token_embedding.weight"
#: (text width, first UNet channels) of the demo model (core/demo_model.py).
DEMO_SHAPE = (32, 32)
#: (first text width, second text width, first UNet channels) of the tiny SDXL (core/demo_model.py).
DEMO_SDXL_SHAPE = (32, 64, 32)


class UnsupportedModel(ModelError):
    """A valid checkpoint that the PyTorch engine cannot run (SDXL, inpainting, a LoRA...)."""


@dataclass(frozen=True)
class CheckpointArch:
    """What a checkpoint is. ``profile`` names the shipped config set that loads it."""

    base: str  # "SD1", "SD2", "SDXL", a family label ("Z-Image", "FLUX.2 [klein]", "SD 3.5"), "unknown"
    profile: str  # "sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "demo", "demo-sdxl"...; "" when HeyIm cannot run it
    problem: str = ""
    #: The UNet's input channels: 4, or 9 for an inpainting model (latents + mask + masked latents).
    unet_in_channels: int = 4

    @property
    def supported(self) -> bool:
        return bool(self.profile)


def _sidecar_parameterization(path: Path | None) -> str | None:
    """A1111 convention: ``model.yaml`` beside ``model.safetensors`` is its original config."""
    if path is None:
        return None
    yaml = path.with_suffix(".yaml")
    try:
        text = yaml.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return "v" if "parameterization" in text and '"v"' in text.replace("'", '"') else "eps"


def detect_architecture(header: SafetensorsHeader, path: Path | None = None) -> CheckpointArch:
    arch = _detect_architecture(header, path)
    unet_in = header.shape(UNET_IN)
    if arch.supported and unet_in is not None and len(unet_in) == 4 and unet_in[1] == 9:
        from dataclasses import replace

        return replace(arch, unet_in_channels=9)
    return arch


def _detect_architecture(header: SafetensorsHeader, path: Path | None) -> CheckpointArch:
    keys = header.tensors
    from heyim_desktop.core.families import family_of_keys

    family = family_of_keys(keys)
    if family is not None:
        return CheckpointArch(
            family.label, "",
            f"A single-file {family.label} transformer: it runs with the other parts of a {family.label} diffusers "
            "folder (put it in that folder's transformer/, or beside the folder).",
        )
    if any(k.startswith(("lora_unet_", "lora_te_")) or ".lora_" in k for k in list(keys)[:200]):
        return CheckpointArch("unknown", "", "This is a LoRA, not a full model; HeyIm cannot use LoRAs yet.")
    unet_in = header.shape(UNET_IN)
    if unet_in is None or len(unet_in) != 4:
        if any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys) and not any(
            k.startswith("model.diffusion_model.") for k in keys
        ):
            return CheckpointArch("unknown", "", "This is a VAE on its own, not a full model.")
        return CheckpointArch("unknown", "", "Not a Stable Diffusion checkpoint (no UNet weights found).")
    if unet_in[1] not in (4, 9):  # 9: an inpainting model, loaded with a 9-channel UNet
        kind = {8: "an instruct-pix2pix"}.get(unet_in[1], "an unusual")
        return CheckpointArch("unknown", "", f"This is {kind} model ({unet_in[1]} input channels); "
                                             "HeyIm runs text-to-image and inpainting models.")
    if not any(k.startswith("first_stage_model.") for k in keys):
        return CheckpointArch("unknown", "", "The checkpoint has no VAE weights (first_stage_model.*).")
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return _detect_sdxl(header, unet_in[0])
    clip = next((header.shape(k) for k in CLIP_TOKENS if k in keys), None)
    if clip is not None:
        if (clip[-1], unet_in[0]) == DEMO_SHAPE:
            return CheckpointArch("SD1", "demo")
        if clip[-1] == 768 and unet_in[0] == 320:
            return CheckpointArch("SD1", "sd1")
        return CheckpointArch("SD1", "", f"Unrecognised SD 1.x variant (text width {clip[-1]}, UNet width {unet_in[0]}).")
    open_clip = header.shape(OPEN_CLIP_TOKENS)
    if open_clip is not None:
        if open_clip[-1] != 1024 or unet_in[0] != 320:
            return CheckpointArch("SD2", "", f"Unrecognised SD 2.x variant (text width {open_clip[-1]}).")
        pred = header.metadata.get("modelspec.prediction_type") or _sidecar_parameterization(path)
        # Without a hint, assume v-prediction: SD 2.0-v/2.1 (768 px) are the common 2.x checkpoints.
        return CheckpointArch("SD2", "sd2" if pred in ("eps", "epsilon") else "sd2-v")
    return CheckpointArch("unknown", "", "The checkpoint has no text encoder weights (cond_stage_model.*).")


def _detect_sdxl(header: SafetensorsHeader, unet_width: int) -> CheckpointArch:
    clip, big_g = header.shape(SDXL_CLIP_TOKENS), header.shape(SDXL_OPEN_CLIP_TOKENS)
    if clip is not None and big_g is not None:
        if (clip[-1], big_g[-1], unet_width) == DEMO_SDXL_SHAPE:
            return CheckpointArch("SDXL", "demo-sdxl")
        if (clip[-1], big_g[-1], unet_width) == (768, 1280, 320):
            return CheckpointArch("SDXL", "sdxl")
        return CheckpointArch(
            "SDXL", "", f"Unrecognised SDXL variant (text widths {clip[-1]} and {big_g[-1]}, UNet width {unet_width})."
        )
    refiner = header.shape(REFINER_OPEN_CLIP_TOKENS)
    if refiner is not None:
        if (refiner[-1], unet_width) == DEMO_SDXL_SHAPE[1:]:
            return CheckpointArch("SDXL", "demo-sdxl-refiner")
        if (refiner[-1], unet_width) == (1280, 384):
            return CheckpointArch("SDXL", "sdxl-refiner")
        return CheckpointArch("SDXL", "", f"Unrecognised SDXL refiner variant (text width {refiner[-1]}, UNet width {unet_width}).")
    return CheckpointArch("SDXL", "", "SDXL checkpoint without both text encoders (conditioner.embedders.*).")


# --- the shipped configs ---------------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    from heyim_desktop.core.demo_model import _bytes_to_unicode as b2u

    return b2u()


def write_clip_tokenizer_files(folder: Path) -> None:
    """vocab.json and merges.txt of the CLIP tokenizer, derived from the BPE list the app ships.

    Same derivation as OpenAI's ``SimpleTokenizer`` (and so the same ids as Hugging Face's files).
    """
    gz = resources.files("heyim_desktop").joinpath("resources/model_configs/clip_bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [ch + "</w>" for ch in alphabet] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _tokenizers_written(folder: Path) -> bool:
    tokenizers = list(folder.glob("tokenizer*")) if folder.is_dir() else []
    return bool(tokenizers) and all((t / "merges.txt").is_file() for t in tokenizers)


def profile_config_dir(profile: str) -> Path:
    """A diffusers-format config folder (no weights) for ``profile``, built once in the cache."""
    from heyim_desktop.core import paths

    if profile == "demo":
        return paths.ensure_demo_model()
    if profile in ("demo-sdxl", "demo-sdxl-refiner"):
        return paths.ensure_demo_sdxl_model(refiner=profile.endswith("refiner"))
    source = resources.files("heyim_desktop").joinpath(f"resources/model_configs/{profile}")
    if not source.is_dir():
        raise ModelError(f"No shipped configuration for {profile!r}.")
    from heyim_desktop import __version__

    target = paths.cache_dir() / "model-configs" / __version__ / profile
    if _tokenizers_written(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{profile}-", dir=target.parent))
    try:
        with resources.as_file(source) as src:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        for tokenizer in sorted(tmp.glob("tokenizer*")):  # SDXL has tokenizer/ and tokenizer_2/
            write_clip_tokenizer_files(tokenizer)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
