"""Turning a model reference into an engine: the default loader used when no library is present."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from heyim_desktop.core.engine import Engine
from heyim_desktop.core.errors import ModelError

DEMO_REF = "demo"


def load_engine(
    ref: str,
    device: str = "auto",
    precision: str = "auto",
    *,
    compute_units: str | None = None,
    on_status: Callable[[str], None] | None = None,
    text_encoder: str | None = None,
    memory: str = "auto",
) -> Engine:
    """Load ``ref``: ``"demo"`` (the tiny random model), a diffusers model folder (also a Hugging
    Face cache snapshot), a single-file ``.safetensors`` checkpoint (recognised by content), or a
    Core ML resources folder (macOS; ``device`` "auto" or "coreml"; ``compute_units`` or
    "coreml:UNITS" picks CPU_AND_NE, ALL, CPU_AND_GPU, CPU_ONLY or AUTO; ``on_status`` hears
    Core ML's load steps). ``text_encoder``: a GGUF text encoder file used instead of a Z-Image,
    FLUX.2 [klein] or SD 3.5 model's own (core.families.text_encoder_gguf). ``memory``: how those
    models use memory (core.devices.MEMORY_MODES; other models take "auto" and ignore it)."""
    from heyim_desktop.core import paths
    from heyim_desktop.core.devices import require_device
    from heyim_desktop.core.thirdparty import quiet_third_party

    require_device(device)  # a GPU the computer lacks fails before anything heavy is imported
    quiet_third_party()
    encoder = Path(text_encoder).expanduser() if text_encoder else None
    from heyim_desktop.core.devices import check_memory_mode

    check_memory_mode(memory)
    engine = _load(ref, device, precision, compute_units, on_status, encoder, memory)
    attach_model_hash(engine, paths.ensure_demo_model() if ref == DEMO_REF else Path(ref).expanduser())
    return engine


def attach_model_hash(engine: Engine, source: Path) -> None:
    """Give the engine AUTOMATIC1111's short hash of its weights (read once per file, then cached).

    The first load of a big checkpoint reads the whole file once (seconds); later loads find the
    hash in the cache by path, size and modification time.
    """
    import logging

    from heyim_desktop.core.hashes import shared_hashes

    if not hasattr(engine, "model_hash"):
        return
    try:
        engine.model_hash = shared_hashes().short(source)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not hash %s: %s", source, exc)


def _load(
    ref: str, device: str, precision: str, compute_units: str | None, on_status: Callable[[str], None] | None,
    text_encoder: Path | None = None, memory: str = "auto",
) -> Engine:
    from heyim_desktop.core import paths

    family_only = (f"{Path(ref).name} is not a Z-Image, FLUX.2 [klein] or SD 3.5 model; a GGUF text encoder "
                   "file is for those.")
    if ref == DEMO_REF:
        folder = paths.ensure_demo_model()
    else:
        folder = require_model_path(ref)
        if not folder.is_dir():  # a checkpoint file (a FIFO or device is refused there, unread)
            if _is_family_transformer(folder):  # GGUF / single-file Z-Image, FLUX.2 [klein], SD 3.5
                from heyim_desktop.core.families.engine import load_family_file_engine

                return load_family_file_engine(folder, device=device, precision=precision, text_encoder_file=text_encoder,
                                               memory=memory)
            if text_encoder is not None:
                raise ModelError(family_only)
            from heyim_desktop.core.single_file import load_single_file_engine

            return load_single_file_engine(folder, device=device, precision=precision)
        from heyim_desktop.core.coreml.detect import looks_like_coreml_folder

        if device.startswith("coreml") or looks_like_coreml_folder(folder):
            if text_encoder is not None:
                raise ModelError(family_only)
            return _load_coreml(folder, device, compute_units, on_status)
        from heyim_desktop.core.families import read_family_index

        found = read_family_index(folder)
        if found is not None:  # Z-Image, FLUX.2 [klein], SD 3.5: diffusers' own pipeline
            from heyim_desktop.core.families.engine import load_family_engine

            return load_family_engine(folder, found[1], device=device, precision=precision,
                                      text_encoder_file=text_encoder, memory=memory)
    if text_encoder is not None:
        raise ModelError(family_only)
    from heyim_desktop.core.torch_engine import load_torch_engine

    return load_torch_engine(folder, device=device, precision=precision)


def _is_family_transformer(path: Path) -> bool:
    """A .gguf file, or a safetensors file whose header is a family transformer (header only, no torch)."""
    from heyim_desktop.core.families.single_file import transformer_file_family

    if path.suffix.lower() == ".gguf":
        return True
    try:
        return transformer_file_family(path) is not None
    except (ModelError, OSError):
        return False  # the checkpoint loader reports what is wrong with it


def require_model_path(ref: str) -> Path:
    """The file or folder ``ref`` names; a clear :class:`ModelError` when it is not there."""
    folder = Path(ref).expanduser()
    if not folder.exists():
        what = "file" if folder.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".gguf") else "folder"
        raise ModelError(f"Model {what} not found: {ref}")
    return folder


def _load_coreml(folder: Path, device: str, compute_units: str | None, on_status: Callable[[str], None] | None) -> Engine:
    import sys

    from heyim_desktop.core.coreml.detect import looks_like_coreml_folder
    from heyim_desktop.core.coreml.engine import MACOS_ONLY, load_coreml_engine

    kind, _, units = device.partition(":")
    if kind not in ("auto", "coreml"):
        raise ModelError(f"{folder.name} is a Core ML model; it runs on the coreml device, not {device}.")
    if not looks_like_coreml_folder(folder):
        raise ModelError(f"{folder.name} is not a Core ML model folder (no Unet.mlmodelc or .mlpackage inside).")
    if sys.platform != "darwin":
        raise ModelError(MACOS_ONLY)
    return load_coreml_engine(folder, units or compute_units, on_status=on_status)
