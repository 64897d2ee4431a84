"""A random LaMa (spandrel's big-LaMa architecture, full size) saved as safetensors, made once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_made: dict[int, Path] = {}


def write_tiny_lama(dest: Path, cache: Path, seed: int = 0, prefix: str = "") -> Path:
    """Copy a random LaMa generator's weights to ``dest`` (built and saved into ``cache`` once).

    ``prefix`` "generator." writes the tensors as a training checkpoint names them, plus one
    discriminator tensor the loader must drop."""
    import torch
    from safetensors.torch import save_file

    from heyim_desktop.core.upscale import import_spandrel

    key = seed
    src = _made.get(key)
    if src is None or not src.is_file():
        import_spandrel()
        from spandrel.architectures.LaMa import LaMa

        torch.manual_seed(seed)
        model = LaMa(in_nc=4, out_nc=3).eval()
        state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
        src = cache / f"lama-{seed}.safetensors"
        save_file(state, str(src))
        _made[key] = src
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not prefix:
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        return dest
    from safetensors.torch import load_file

    state = load_file(str(src))
    renamed = {k.replace("model.model", "generator.model", 1): v for k, v in state.items()}
    renamed["discriminator.model0.0.weight"] = torch.zeros(2, 2)
    save_file(renamed, str(dest))
    return dest
