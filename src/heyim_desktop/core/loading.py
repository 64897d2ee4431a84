"""Turning a model reference into an engine: the default loader used when no library is present."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.core.engine import Engine
from heyim_desktop.core.errors import ModelError

DEMO_REF = "demo"


def load_engine(ref: str, device: str = "auto", precision: str = "auto") -> Engine:
    """Load ``ref``: ``"demo"`` (the tiny random model), a diffusers model folder (also a Hugging
    Face cache snapshot) or a single-file ``.safetensors`` checkpoint (recognised by content)."""
    from heyim_desktop.core import paths
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    if ref == DEMO_REF:
        folder = paths.ensure_demo_model()
    else:
        folder = Path(ref).expanduser()
        if not folder.exists():
            what = "file" if folder.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin") else "folder"
            raise ModelError(f"Model {what} not found: {ref}")
        if folder.is_file():
            from heyim_desktop.core.single_file import load_single_file_engine

            return load_single_file_engine(folder, device=device, precision=precision)
    from heyim_desktop.core.torch_engine import load_torch_engine

    return load_torch_engine(folder, device=device, precision=precision)
