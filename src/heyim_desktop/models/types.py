"""Values the model library hands out."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ModelStatus(enum.Enum):
    READY = "ready"
    INCOMPLETE = "incomplete"  # files missing (half-copied or half-downloaded folder)
    UNSAFE = "unsafe"  # pickle weights: never loaded in-process; convert them
    CORRUPT = "corrupt"  # damaged file (truncated, bogus header)
    UNSUPPORTED = "unsupported"  # valid, but not something this machine's engines run (SDXL, Core ML off macOS)


@dataclass(frozen=True)
class ModelInfo:
    """One model as the library lists it. ``ref`` is what a GenerationRequest's ``model`` holds."""

    name: str
    ref: str
    kind: str  # "diffusers", "safetensors", "gguf", "coreml", "pickle", "demo", "upscaler", "lora", "embedding"
    #: "SD1", "SD2", "SDXL", "SDXL-refiner", "SD" (Core ML or a T2I-Adapter: 1.x/2.x), a diffusion-transformer family's
    #: label ("Z-Image", "FLUX.2 [klein]", "SD 3.5": core.families), "unknown"
    base: str
    size_bytes: int
    status: ModelStatus
    problem: str = ""
    source: str = ""  # "app", "repo", "user", "hf-cache", "built-in"
    #: Upscalers: how many times larger the model makes an image (0: found out when loaded).
    scale: int = 0
    #: GGUF files: their main quantization ("Q8_0", "Q4_K"...); "" for unquantized weights.
    quantization: str = ""
    #: Family folders with a GGUF text encoder (core.families.text_encoder_gguf): its quantization.
    text_encoder_quantization: str = ""

    @property
    def ready(self) -> bool:
        return self.status is ModelStatus.READY

    @property
    def is_refiner(self) -> bool:
        """An SDXL refiner: it finishes another model's images (``GenerationRequest.refiner``)."""
        return self.base == "SDXL-refiner"

    @property
    def kind_label(self) -> str:
        """The kind with its quantizations, as the library shows it: "gguf Q8_0", "diffusers, text encoder Q4_K"."""
        label = f"{self.kind} {self.quantization}" if self.quantization else self.kind
        if self.text_encoder_quantization:
            label += f", text encoder {self.text_encoder_quantization}"
        return label

    @property
    def summary(self) -> str:
        return "ready" if self.ready else f"{self.status.value}: {self.problem}"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
