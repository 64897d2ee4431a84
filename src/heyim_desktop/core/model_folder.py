"""Recognising a diffusers-format Stable Diffusion (1.x, 2.x, SDXL) folder without loading it (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import ModelError

SUPPORTED_PIPELINES = {
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipelineLegacy",
    "LatentConsistencyModelPipeline",
}
SDXL_PIPELINES = {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"}
REQUIRED_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def folder_family(index: dict[str, Any]) -> str:
    """"sdxl", "sdxl-refiner" (second text encoder only) or "sd" for a valid folder's model_index."""
    if index.get("_class_name") not in SDXL_PIPELINES:
        return "sd"
    text_encoder = index.get("text_encoder")
    has_first = isinstance(text_encoder, list) and bool(text_encoder) and text_encoder[0] is not None
    return "sdxl" if has_first else "sdxl-refiner"


def required_parts(index: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(all parts, parts with weights, tokenizers) a folder of this family needs."""
    family = folder_family(index)
    encoders: tuple[str, ...]
    tokenizers: tuple[str, ...]
    if family == "sdxl":
        encoders, tokenizers = ("text_encoder", "text_encoder_2"), ("tokenizer", "tokenizer_2")
    elif family == "sdxl-refiner":
        encoders, tokenizers = ("text_encoder_2",), ("tokenizer_2",)
    else:
        encoders, tokenizers = ("text_encoder",), ("tokenizer",)
    weighted = ("unet", "vae", *encoders)
    return (*weighted, *tokenizers, "scheduler"), weighted, tokenizers


def _check_weights(folder: Path, part: str, weights: Path) -> None:
    """A component's weight file is a regular file with a sound safetensors header (only the header is read)."""
    from heyim_desktop.core.model_files import CorruptModel, UnsafeModel, read_safetensors_header

    try:
        read_safetensors_header(weights)
    except UnsafeModel as exc:
        raise ModelError(f"{folder.name}/{part}: {exc}") from None
    except CorruptModel as exc:
        raise ModelError(f"{folder.name} is damaged: {part}/{exc}") from None
    except OSError as exc:
        raise ModelError(f"{folder.name}: cannot read {part}/{weights.name} ({exc.strerror or exc}).") from None


def check_diffusers_folder(folder: Path) -> dict[str, Any]:
    """Validate a diffusers-format folder; return its model_index. Raises ModelError naming what is wrong."""
    if not folder.exists():
        raise ModelError(f"Model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder. Single-file checkpoints are imported through the model library.")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(f"{folder.name} is not a diffusers model: model_index.json is missing.")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder.name}: model_index.json is unreadable ({exc}).") from None
    if not isinstance(index, dict):
        raise ModelError(f"{folder.name}: model_index.json is not a JSON object.")
    kind = index.get("_class_name", "")
    if kind not in SUPPORTED_PIPELINES and kind not in SDXL_PIPELINES:
        raise ModelError(f"{folder.name} is a {kind or 'unknown'} model; HeyIm runs Stable Diffusion 1.x/2.x and SDXL models.")
    parts, weighted, tokenizers = required_parts(index)
    missing = [part for part in parts if not (folder / part).is_dir()]
    if missing:
        raise ModelError(f"{folder.name} is incomplete: missing {', '.join(missing)}/.")
    for part in weighted:
        files = list((folder / part).glob("*.safetensors"))
        if not files:
            pickles = [p.name for p in (folder / part).glob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
            if pickles:
                raise ModelError(
                    f"{folder.name}/{part} has only pickle weights ({', '.join(pickles)}), which HeyIm never loads "
                    "because they can run code. Convert the model to .safetensors in the model library."
                )
            raise ModelError(f"{folder.name} is incomplete: {part}/ has no .safetensors weights.")
        if not (folder / part / "config.json").is_file():
            raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing.")
        for weights in sorted(files):
            _check_weights(folder, part, weights)
    for tokenizer in tokenizers:
        for name in ("vocab.json", "merges.txt"):
            if not (folder / tokenizer / name).is_file():
                raise ModelError(f"{folder.name} is incomplete: {tokenizer}/{name} is missing.")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelError(f"{folder.name} is incomplete: scheduler/scheduler_config.json is missing.")
    return index
