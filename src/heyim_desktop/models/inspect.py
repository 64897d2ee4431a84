"""Describing one candidate (folder or file) as a ModelInfo, by content and without torch."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from heyim_desktop.core.checkpoint import detect_architecture
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import (
    CorruptModel,
    FileKind,
    UnsafeModel,
    file_size,
    read_safetensors_header,
    sniff,
)
from heyim_desktop.core.model_folder import check_diffusers_folder, folder_family
from heyim_desktop.models.types import ModelInfo, ModelStatus

if TYPE_CHECKING:
    from heyim_desktop.core.families import Family

log = logging.getLogger(__name__)

DEMO_NAME = "HeyIm demo (tiny random model)"
PICKLE_ADVICE = (
    "pickle checkpoint: it can run code when loaded, so HeyIm never opens it. "
    "Convert it once with `heyim-desktop models import FILE --convert` (a separate, restricted process)."
)


def folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size  # follows HF-cache symlinks to their blobs
            except OSError:
                pass
    return total


def _guess_base(folder: Path) -> str:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        if isinstance(index, dict) and "XL" in str(index.get("_class_name", "")):
            return "SDXL-refiner" if folder_family(index) == "sdxl-refiner" else "SDXL"
    except (OSError, ValueError):
        pass
    try:
        cfg = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    hidden = cfg.get("hidden_size")
    return {768: "SD1", 1024: "SD2"}.get(hidden, "unknown")


def inspect_folder(folder: Path, source: str = "", name: str | None = None) -> ModelInfo | None:
    """Describe ``folder`` if it looks like a model (complete or not); None if it is not one."""
    if (folder / "model_index.json").exists():
        return _inspect_diffusers(folder, source, name)
    return inspect_coreml(folder, source)


def _inspect_diffusers(folder: Path, source: str, name: str | None) -> ModelInfo:
    size = folder_size(folder)
    from heyim_desktop.core.families import check_family_folder, read_family_index

    found = read_family_index(folder)
    if found is not None:  # Z-Image, FLUX.2 [klein], SD 3.5
        family, index = found
        label = name or folder.name
        quantization = ""
        try:
            check_family_folder(folder, index)
            quant, text_quant = _family_folder_quantizations(folder, family, index)
        except ModelError as exc:
            text = str(exc)
            status = (ModelStatus.UNSAFE if "pickle" in text
                      else ModelStatus.CORRUPT if " is damaged: " in text or isinstance(exc, CorruptModel)
                      else ModelStatus.INCOMPLETE if " is incomplete: " in text or "GGUF" not in text
                      else ModelStatus.UNSUPPORTED)  # a GGUF of another architecture, model or size
            return ModelInfo(label, str(folder), "diffusers", family.label, size, status, text, source)
        return ModelInfo(label, str(folder), "diffusers", family.label, size, ModelStatus.READY, "", source,
                         quantization=quant, text_encoder_quantization=text_quant)
    try:
        index = check_diffusers_folder(folder)
    except ModelError as exc:
        text = str(exc)
        unsupported = "HeyIm runs" in text
        status = (ModelStatus.UNSUPPORTED if unsupported else ModelStatus.UNSAFE if "pickle" in text
              else ModelStatus.CORRUPT if " is damaged: " in text else ModelStatus.INCOMPLETE)
        base = _guess_base(folder)
        return ModelInfo(name or folder.name, str(folder), "diffusers", base, size, status, text, source)
    label = DEMO_NAME if index.get("_heyim_demo") and folder_family(index) == "sd" else (name or folder.name)
    return ModelInfo(label, str(folder), "diffusers", _guess_base(folder), size, ModelStatus.READY, "", source)


def _family_folder_quantizations(folder: Path, family: "Family", index: dict[str, object]) -> tuple[str, str]:
    """A family folder's GGUF transformer's and GGUF text encoder's quantizations ("" for full weights)."""
    from heyim_desktop.core.families.single_file import folder_transformer_file, gguf_quantization
    from heyim_desktop.core.families.text_encoder_gguf import text_encoder_ggufs

    try:
        transformer = folder_transformer_file(folder)
        quant = gguf_quantization(transformer) if transformer is not None else ""
    except CorruptModel as exc:
        raise ModelError(f"{folder.name} is damaged: {exc}") from exc
    encoders = text_encoder_ggufs(folder, family, index)
    return quant, encoders[0].quantization if encoders else ""


def inspect_file(path: Path, source: str = "") -> ModelInfo:
    """A single-file checkpoint, recognised by its content (never unpickled)."""
    size = file_size(path)
    name = path.stem
    try:
        kind = sniff(path)  # refuses a FIFO or device before reading from it
    except CorruptModel as exc:
        return ModelInfo(name, str(path), "file", "unknown", size, ModelStatus.CORRUPT, str(exc), source)
    except OSError as exc:
        return ModelInfo(name, str(path), "file", "unknown", size, ModelStatus.CORRUPT, f"unreadable: {exc}", source)
    if kind is FileKind.PICKLE:
        return ModelInfo(name, str(path), "pickle", "unknown", size, ModelStatus.UNSAFE, PICKLE_ADVICE, source)
    if kind is FileKind.GGUF:
        return _inspect_gguf(path, name, size, source)
    try:
        header = read_safetensors_header(path)
    except UnsafeModel as exc:
        return ModelInfo(name, str(path), "pickle", "unknown", size, ModelStatus.UNSAFE, str(exc), source)
    except CorruptModel as exc:
        return ModelInfo(name, str(path), "safetensors", "unknown", size, ModelStatus.CORRUPT, str(exc), source)
    from heyim_desktop.models.networks import inspect_network

    network = inspect_network(path, source)
    if network is not None:
        return network
    arch = detect_architecture(header, path)
    family = _family_by_label(arch.base)
    if family is not None:  # a single-file family transformer: ready when a folder lends it the other parts
        return _family_file(path, name, "safetensors", family, size, source, "")
    status = ModelStatus.READY if arch.supported else ModelStatus.UNSUPPORTED
    base = "SDXL-refiner" if arch.profile.endswith("refiner") else arch.base
    return ModelInfo(name, str(path), "safetensors", base, size, status, arch.problem, source)


def _family_by_label(label: str) -> "Family | None":
    from heyim_desktop.core.families import FAMILIES

    return next((f for f in FAMILIES.values() if f.label == label), None)


def _family_file(path: Path, name: str, kind: str, family: "Family", size: int, source: str,
                 quantization: str) -> ModelInfo:
    from heyim_desktop.core.families.single_file import find_base_folder, no_base_message

    base = find_base_folder(path, family)
    if base is None:
        return ModelInfo(name, str(path), kind, family.label, size, ModelStatus.UNSUPPORTED,
                         no_base_message(path, family), source, quantization=quantization)
    return ModelInfo(name, str(path), kind, family.label, size, ModelStatus.READY, "", source,
                     quantization=quantization)


def _inspect_gguf(path: Path, name: str, size: int, source: str) -> ModelInfo:
    """A GGUF file from its header alone (metadata and tensor table; nothing is run or unpickled)."""
    from heyim_desktop.core.families import family_of_keys
    from heyim_desktop.core.gguf_header import read_gguf_header

    try:
        header = read_gguf_header(path)
    except CorruptModel as exc:
        return ModelInfo(name, str(path), "gguf", "unknown", size, ModelStatus.CORRUPT, str(exc), source)
    family = family_of_keys(header.tensors)
    if family is None:
        arch = header.metadata.get("general.architecture")
        what = f"a GGUF {arch} model" if isinstance(arch, str) else "a GGUF file"
        return ModelInfo(name, str(path), "gguf", "unknown", size, ModelStatus.UNSUPPORTED,
                         f"{what}, not a Z-Image, FLUX.2 [klein] or SD 3.5 transformer", source,
                         quantization=header.quantization)
    return _family_file(path, name, "gguf", family, size, source, header.quantization)


# --- Core ML (Apple's layout) ------------------------------------------------------------------

def inspect_coreml(folder: Path, source: str = "") -> ModelInfo | None:
    """Describe an Apple Core ML resources folder with the engine's own (torch-free) detection."""
    from heyim_desktop.core.coreml.detect import KIND_SDXL, detect_coreml_folder, looks_like_coreml_folder

    if not looks_like_coreml_folder(folder):
        return None
    size = folder_size(folder)
    try:
        info = detect_coreml_folder(folder)
    except ModelError as exc:
        return ModelInfo(folder.name, str(folder), "coreml", "unknown", size, ModelStatus.INCOMPLETE, str(exc), source)
    if info.kind == KIND_SDXL:
        base = "SDXL-refiner" if info.refiner else "SDXL"
    else:
        hidden = info.model("TextEncoder").outputs[0].shape[-1] if info.model("TextEncoder").outputs else 0
        base = {768: "SD1", 1024: "SD2"}.get(hidden, "unknown")
    if sys.platform != "darwin":
        return ModelInfo(folder.name, str(folder), "coreml", base, size, ModelStatus.UNSUPPORTED,
                         "Core ML models run on macOS only.", source)
    w, h = info.size
    weights = f", {info.bits}-bit weights" if info.bits else ""
    note = f"Makes {w}x{h} images only ({info.attention} attention{weights})."
    if info.img2img_note:
        note += f" {info.img2img_note[0].upper()}{info.img2img_note[1:]}."
    return ModelInfo(folder.name, str(folder), "coreml", base, size, ModelStatus.READY, note, source)


# --- the Hugging Face cache --------------------------------------------------------------------

def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_cache_snapshots(cache: Path) -> list[tuple[Path, str, Path]]:
    """(snapshot folder, "org/name", repo folder) of diffusers models in the HF cache."""
    found: list[tuple[Path, str, Path]] = []
    if not cache.is_dir():
        return found
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        try:
            commit = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
            snap = snapshots / commit
        except OSError:
            snap = Path()
        if not snap.name or not snap.is_dir():
            candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
            snap = candidates[0] if candidates else Path()
        if snap.name and (snap / "model_index.json").is_file():
            found.append((snap, repo.name[len("models--"):].replace("--", "/"), repo))
    return found
