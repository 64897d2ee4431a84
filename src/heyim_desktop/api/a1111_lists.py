"""What the AUTOMATIC1111 list routes report, one function per list.

Each returns plain dicts in AUTOMATIC1111's item shape. HeyIm has none of most of these
things (hypernetworks, face restorers, scripts), so those lists are empty by design; the
ones marked "filled by" change as features land: replace the function's body (or give
:class:`~heyim_desktop.api.context.ApiContext` another callable) and the route follows.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heyim_desktop.core.lora import NetworkFinder

log = logging.getLogger(__name__)


def upscalers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/upscalers``: {name, model_name, model_path, model_url, scale}. Filled by upscaling."""
    return []


def latent_upscale_modes() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/latent-upscale-modes``: {name}, AUTOMATIC1111's hires fix latent modes."""
    from heyim_desktop.core.upscale import LATENT_MODES

    return [{"name": name} for name in LATENT_MODES]


def _metadata(path: Path) -> dict[str, Any]:
    """A LoRA's safetensors ``__metadata__``, JSON-looking values parsed, as AUTOMATIC1111 reports it."""
    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.core.model_files import read_safetensors_header

    try:
        raw = read_safetensors_header(path).metadata
    except (OSError, ModelError) as exc:
        log.warning("cannot read the metadata of %s: %s", path, exc)
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[str(key)] = value
    return out


def loras(finder: "NetworkFinder | None" = None) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/loras``: {name, alias, path, metadata} for every usable LoRA in the library."""
    if finder is None:
        return []
    out = []
    for name, path in sorted(finder.loras().items(), key=lambda kv: kv[0].lower()):
        metadata = _metadata(path)
        alias = metadata.get("ss_output_name")
        out.append({"name": name, "alias": alias if isinstance(alias, str) and alias else name,
                    "path": str(path), "metadata": metadata})
    return out


def embeddings(finder: "NetworkFinder | None" = None) -> dict[str, Any]:
    """``GET /sdapi/v1/embeddings``: {loaded: {name: {step, sd_checkpoint, sd_checkpoint_name, shape,
    vectors}}, skipped: {...}}; files HeyIm cannot read as an embedding are skipped."""
    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.core.lora import inspect_network_file

    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    if finder is None:
        return {"loaded": loaded, "skipped": skipped}
    for name, path in sorted(finder.embeddings().items(), key=lambda kv: kv[0].lower()):
        try:
            info = inspect_network_file(path)
            metadata = _metadata(path)
        except (OSError, ModelError) as exc:
            log.warning("embedding %s skipped: %s", path, exc)
            skipped[name] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 0, "vectors": 0}
            continue
        step = metadata.get("step")
        entry = {
            "step": int(step) if isinstance(step, (int, str)) and str(step).isdigit() else None,
            "sd_checkpoint": metadata.get("sd_checkpoint") if isinstance(metadata.get("sd_checkpoint"), str) else None,
            "sd_checkpoint_name": (metadata.get("sd_checkpoint_name")
                                   if isinstance(metadata.get("sd_checkpoint_name"), str) else None),
            "shape": int(info.text_dim or 0),
            "vectors": int(info.vectors),
        }
        (loaded if info.kind == "embedding" else skipped)[name] = entry
    return {"loaded": loaded, "skipped": skipped}


def memory() -> dict[str, Any]:
    """``GET /sdapi/v1/memory``: this process's RAM and, on CUDA, torch's allocator figures."""
    try:
        import psutil

        rss = psutil.Process(os.getpid()).memory_info().rss
        total = psutil.virtual_memory().total
        ram: dict[str, Any] = {"free": max(0, total - rss), "used": rss, "total": total}
    except Exception as exc:  # noqa: BLE001 - the route reports what it cannot read, as AUTOMATIC1111 does
        ram = {"error": str(exc)}
    import sys

    torch = sys.modules.get("torch")  # never import torch just to answer this
    cuda: dict[str, Any] = {"error": "unavailable"}
    if torch is not None and torch.cuda.is_available():
        try:
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()

            def pair(key: str) -> dict[str, int]:
                return {"current": int(stats.get(f"{key}.all.current", 0)), "peak": int(stats.get(f"{key}.all.peak", 0))}

            cuda = {
                "system": {"free": free, "used": total - free, "total": total},
                "active": pair("active_bytes"),
                "allocated": pair("allocated_bytes"),
                "reserved": pair("reserved_bytes"),
                "inactive": pair("inactive_split_bytes"),
                "events": {"retries": int(stats.get("num_alloc_retries", 0)), "oom": int(stats.get("num_ooms", 0))},
            }
        except Exception as exc:  # noqa: BLE001
            cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}
