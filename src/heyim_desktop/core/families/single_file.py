"""Single-file family transformers: GGUF-quantized and ``.safetensors``, with a diffusers folder's other parts.

A Z-Image, FLUX.2 [klein] or SD 3.5 transformer shipped as one file (``z-image-turbo-Q8_0.gguf``,
``flux-2-klein-4b.safetensors``) is only the transformer: the text encoder, VAE, tokenizer and
scheduler come from a diffusers folder of the same family. HeyIm finds that folder in two layouts:

* the file sits in the folder's ``transformer/`` (beside ``config.json``): that folder is the model
  (the catalogue's GGUF variants download this way);
* the file sits beside one or more family folders: the first of the same family (by name) lends its parts.

Recognising the file reads its header only (GGUF metadata and tensor table, or the safetensors
header): no torch, nothing run. Loading goes through diffusers' ``from_single_file`` with
``GGUFQuantizationConfig`` for GGUF (weights stay quantized; layers dequantize as they compute).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.families import Family, family_of_keys, read_family_index

log = logging.getLogger(__name__)

TRANSFORMER_SUFFIXES = (".gguf", ".safetensors", ".sft")


def transformer_file_family(path: Path) -> Family | None:
    """The family of a single-file transformer, from its header; None when it is not one (an SD checkpoint)."""
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        from heyim_desktop.core.gguf_header import read_gguf_header

        return family_of_keys(read_gguf_header(path).tensors)
    if suffix in (".safetensors", ".sft"):
        from heyim_desktop.core.model_files import read_safetensors_header

        return family_of_keys(read_safetensors_header(path).tensors)
    return None


def gguf_quantization(path: Path) -> str:
    """The main quantization of a GGUF file ("Q8_0", "Q4_K", ...)."""
    from heyim_desktop.core.gguf_header import read_gguf_header

    return read_gguf_header(path).quantization


def folder_transformer_file(folder: Path) -> Path | None:
    """The GGUF file a family folder's ``transformer/`` holds instead of (or beside) diffusers weights."""
    part = folder / "transformer"
    try:
        found = sorted(p for p in part.iterdir() if p.suffix.lower() == ".gguf" and p.is_file()
                       and not p.name.startswith("."))
    except OSError:
        return None
    if len(found) > 1:
        raise ModelError(f"{folder.name}/transformer holds {len(found)} GGUF files "
                         f"({', '.join(p.name for p in found)}); keep one.")
    return found[0] if found else None


def find_base_folder(path: Path, family: Family) -> Path | None:
    """The diffusers folder of ``family`` whose parts a single-file transformer runs with (see the module)."""
    if path.parent.name == "transformer":
        found = read_family_index(path.parent.parent)
        if found is not None and found[0] is family:
            return path.parent.parent
    try:
        siblings = sorted(p for p in path.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    for folder in siblings:
        found = read_family_index(folder)
        if found is not None and found[0] is family and (folder / "transformer" / "config.json").is_file():
            return folder
    return None


def no_base_message(path: Path, family: Family) -> str:
    return (f"{path.name} is a single-file {family.label} transformer; it needs the text encoder, VAE and tokenizer "
            f"of a {family.label} diffusers folder. Put it in that folder's transformer/ subfolder, or beside the "
            "folder in the same models folder.")


def load_transformer(file: Path, base: Path, index: dict[str, Any], dtype: Any) -> Any:
    """The transformer from ``file`` with ``base``'s transformer config (GGUF stays quantized)."""
    import diffusers

    entry = index.get("transformer")
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)):
        raise ModelError(f"{base.name}/model_index.json names no transformer class.")
    cls = getattr(diffusers, entry[1], None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ModelError(f"{entry[1]} cannot be loaded from a single file by this diffusers.")
    kwargs: dict[str, Any] = {"config": str(base), "subfolder": "transformer", "local_files_only": True,
                              "torch_dtype": dtype}
    if file.suffix.lower() == ".gguf":
        import diffusers as lib

        quant: Any = lib.GGUFQuantizationConfig  # untyped in diffusers
        kwargs["quantization_config"] = quant(compute_dtype=dtype)
    elif file.suffix.lower() not in (".safetensors", ".sft"):
        raise ModelError(f"{file.name}: HeyIm loads single-file transformers from .gguf or .safetensors only.")
    log.info("loading the transformer from %s (%s's other parts)", file, base)
    try:
        return cls.from_single_file(str(file), **kwargs)
    except ImportError as exc:
        raise ModelError(f"{file.name} needs the gguf package: pip install gguf ({exc})") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelError(f"{file.name} could not be loaded as a {entry[1]} with {base.name}'s config: {exc}") from exc
