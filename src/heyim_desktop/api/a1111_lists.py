"""What the AUTOMATIC1111 list routes report, one function per list.

Each returns plain dicts in AUTOMATIC1111's item shape. HeyIm has none of most of these
things (hypernetworks, face restorers, scripts), so those lists are empty by design; the
ones marked "filled by" change as features land: replace the function's body (or give
:class:`~heyim_desktop.api.context.ApiContext` another callable) and the route follows.
"""

from __future__ import annotations

import os
from typing import Any


def upscalers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/upscalers``: {name, model_name, model_path, model_url, scale}. Filled by upscaling."""
    return []


def latent_upscale_modes() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/latent-upscale-modes``: {name}, AUTOMATIC1111's hires fix latent modes."""
    from heyim_desktop.core.upscale import LATENT_MODES

    return [{"name": name} for name in LATENT_MODES]


def loras() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/loras``: {name, alias, path, metadata}. Filled by LoRA support."""
    return []


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
