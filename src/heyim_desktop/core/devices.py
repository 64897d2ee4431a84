"""Which compute devices this install can really use (imports torch: call it off the UI thread)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def detect_devices() -> list[str]:
    """"auto" and "cpu" always; "cuda" and "mps" only when torch sees them; "coreml" on macOS."""
    found = ["auto", "cpu"]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        log.info("torch is not importable; only the CPU is offered")
        return found
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    if sys.platform == "darwin":
        found.append("coreml")
    return found
