"""What fits in 8, 16 and 32 GB: Z-Image Turbo, FLUX.2 [klein] 4B and SD 3.5 Medium, per weight format.

No torch: the model library and the catalogue ask before anything loads. The figures are measured
(``bench/bench_families.py``): the parts' sizes are those of the released architectures saved
in bf16, the working set what one 1024x1024 image costs on top of the weights (activations, the VAE
decode; measured with full-width models). A GGUF transformer takes its quantization's bytes per
weight; a GGUF text encoder is dequantized when it loads (transformers does), so it counts in bf16.

A model *fits* a computer when its peak takes at most :data:`USABLE_SHARE` of the memory (a Mac
shares its memory with the system; Metal's recommended working set is about 3/4 of it). Two peaks:

- everything loaded: all weights plus the working set;
- Save memory (:mod:`.low_memory`): the text encoders and the transformer are loaded in turn, so the
  larger of text encoders + VAE and transformer + VAE + working set.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A model fits when its peak takes at most this share of the memory.
USABLE_SHARE = 0.75
MEMORY_SIZES_GB = (8, 16, 32)

#: Bytes of each part in bf16, measured from the released architectures saved by bench/family_arch.py
#: (SD 3.5's transformer includes its 384x384 position table, stored in fp32).
PARTS_GB: dict[str, dict[str, float]] = {
    "zimage": {"transformer": 12.31, "text_encoder": 8.04, "vae": 0.17},
    "flux2": {"transformer": 7.75, "text_encoder": 8.04, "vae": 0.17},
    "sd3": {"transformer": 5.39, "text_encoder": 0.25, "text_encoder_2": 1.39, "text_encoder_3": 9.52, "vae": 0.17},
}
#: What one 1024x1024 image takes beyond the weights (GB): the peak while generating less the resident
#: memory before, measured on the CPU in bf16 with two-layer models of full width (activations live one
#: layer at a time), the real VAE decoding the whole image and the real-width text encoders:
#: ``bench/bench_families.py --cache DIR --working-set`` (2026-12-02, 1 step).
WORKING_SET_GB: dict[str, float] = {"zimage": 3.36, "flux2": 2.98, "sd3": 3.07}
#: Bytes per weight of each format, relative to bf16's 2 (GGUF: ggml's block sizes; K-quants mix types,
#: Q4_K_M averages about 4.85 bits a weight).
FORMAT_SHARE = {"bf16": 1.0, "Q8_0": (34 / 32) / 2, "Q6_K": (210 / 256) / 2, "Q5_K_M": (5.7 / 8) / 2,
                "Q4_K_M": (4.85 / 8) / 2, "Q4_0": (18 / 32) / 2}


def format_share(fmt: str) -> float:
    """Bytes per weight of ``fmt`` relative to bf16: a GGUF quantization ("Q4_K", "Q4_K_M", "Q8_0"...),
    "F16"/"BF16"/"bf16" or "F32"; an unknown one counts as Q4_K_M (the smallest common choice)."""
    name = fmt.upper()
    if name in ("BF16", "F16", "FP16"):
        return 1.0
    if name in ("F32", "FP32"):
        return 2.0
    for known, share in FORMAT_SHARE.items():
        if known.upper() == name:
            return share
    bits = name[1:2] if name.startswith("Q") else ""
    return {"8": FORMAT_SHARE["Q8_0"], "6": FORMAT_SHARE["Q6_K"], "5": FORMAT_SHARE["Q5_K_M"]}.get(
        bits, FORMAT_SHARE["Q4_K_M"])


@dataclass(frozen=True)
class Fit:
    """The peaks of one model in one configuration, in GB."""

    whole_gb: float
    low_gb: float

    def verdict(self, memory_gb: float) -> str:
        """``whole`` (fits as it is), ``low`` (fits with Save memory) or ``no``."""
        usable = memory_gb * USABLE_SHARE
        if self.whole_gb <= usable:
            return "whole"
        return "low" if self.low_gb <= usable else "no"


def fit(family: str, transformer: str = "bf16", *, transformer_gb: float | None = None) -> Fit:
    """The peaks of ``family`` with its transformer in this format (``transformer_gb``: the transformer
    file's own size, where known, over the format's estimate)."""
    parts = dict(PARTS_GB[family])
    parts["transformer"] = transformer_gb if transformer_gb is not None else parts["transformer"] * format_share(transformer)
    encoders = sum(v for k, v in parts.items() if k.startswith("text_encoder"))
    working = WORKING_SET_GB[family]
    whole = sum(parts.values()) + working
    low = max(encoders + parts["vae"], parts["transformer"] + parts["vae"] + working)
    return Fit(round(whole, 2), round(low, 2))


def fit_line(family: str, transformer: str = "bf16", *, transformer_gb: float | None = None) -> str:
    """What fits, in words, for the catalogue and the model library: from the smallest memory it runs in
    (with Save memory where that is what it takes) up to the one where it runs as it is."""
    peaks = fit(family, transformer, transformer_gb=transformer_gb)
    said: list[str] = []
    for size in MEMORY_SIZES_GB:
        verdict = peaks.verdict(size)
        if verdict == "whole":
            said.append(f"{size} GB as it is")
            break
        if verdict == "low":
            said.append(f"{size} GB with Save memory")
    if not said:
        return f"Memory: more than {MEMORY_SIZES_GB[-1]} GB"
    return "Memory: " + "; ".join(said)


#: The catalogue's and the library's base names for the families.
FAMILY_OF_BASE = {"Z-Image": "zimage", "FLUX.2 [klein]": "flux2", "SD 3.5": "sd3"}

__all__ = ["FAMILY_OF_BASE", "Fit", "MEMORY_SIZES_GB", "PARTS_GB", "USABLE_SHARE", "fit", "fit_line", "format_share"]
