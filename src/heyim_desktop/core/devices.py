"""Which compute devices this install can really use (imports torch: call it off the UI thread)."""

from __future__ import annotations

import logging
import sys

from heyim_desktop.core.errors import DeviceUnavailable

log = logging.getLogger(__name__)

#: Names of the GPU devices in words, for messages.
GPU_NAMES = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)"}
#: Number formats a PyTorch model can run in ("auto": fp16 on a GPU, fp32 on the CPU; the new
#: model families take bf16 on a GPU that has it).
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
PRECISION_HELP = ("auto: fp16 on a GPU (bf16 for Z-Image, FLUX.2 and SD 3.5), fp32 on the CPU; bf16 halves "
                  "the memory on the CPU too; fp32 fixes black images on some GPUs")
#: How a Z-Image / FLUX.2 [klein] / SD 3.5 model uses memory (core.families.low_memory does "low").
MEMORY_MODES = ("auto", "low", "full")
MEMORY_HELP = ("for Z-Image, FLUX.2 [klein] and SD 3.5: low: on a Mac or the CPU the text encoders and the transformer "
               "load in turn (a new prompt reloads them), on an NVIDIA GPU model CPU offload; auto: so when the "
               "weights would take over 3/4 of the memory; full: every part stays loaded (fastest when it fits)")


def check_memory_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`MEMORY_MODES`; a plain-words ModelError if not."""
    from heyim_desktop.core.errors import ModelError

    if mode not in MEMORY_MODES:
        raise ModelError(f"Unknown memory setting {mode!r}; choose one of {', '.join(MEMORY_MODES)}.")
    return mode


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


def require_device(device: str) -> None:
    """Raise :class:`DeviceUnavailable` when ``device`` names a GPU this computer lacks.

    Checked before a model's libraries are imported or its files read, so a saved device the
    machine does not have fails in a moment rather than after a model load. "auto", "cpu" and
    Core ML names pass (Core ML folders are checked by the Core ML loader).
    """
    kind = device.partition(":")[0].lower()
    if kind not in GPU_NAMES or kind in detect_devices():
        return
    raise DeviceUnavailable(f"This computer has no {GPU_NAMES[kind]} that PyTorch can use. "
                            "Choose another compute device: automatic or the CPU.")
