"""What fits in 8, 16 and 32 GB for Z-Image, FLUX.2 [klein] and SD 3.5: COMPUTED, not measured.

The figures come from the published parameter counts of each model's parts and the bytes a weight
takes in each format (bf16: 2; GGUF Q8_0: 34 bytes per 32 weights; Q4_K: 144 bytes per 256 weights),
plus an assumed working set for a 1024x1024 image (activations, VAE decode, the framework): nothing
here is run. A measured figure needs the real weights, which this machine cannot download.

"Whole" keeps every part on the device at once; "offload" (model CPU offload, HeyIm's automatic
choice when the weights take more than 3/4 of the device) holds only the largest part on the
device at a time. On Apple Silicon the memory is shared with the system: a model "fits" when it
takes at most 75% of it (Metal's recommended working set on most Macs is about that).

    python bench/family_memory_table.py
"""

from __future__ import annotations

#: Published parameter counts (billions) per part. Z-Image: 6B S3-DiT, Qwen3-4B, the FLUX.1 VAE;
#: FLUX.2 [klein] 4B: 4B transformer, Qwen3-4B, the FLUX.2 VAE; SD 3.5 Medium: 2.5B MMDiT-X,
#: CLIP-L, OpenCLIP bigG, T5-XXL encoder, the SD3 VAE.
PARTS: dict[str, dict[str, float]] = {
    "Z-Image Turbo": {"transformer": 6.15, "text encoder (Qwen3-4B)": 4.02, "vae": 0.084},
    "FLUX.2 [klein] 4B": {"transformer": 3.9, "text encoder (Qwen3-4B)": 4.02, "vae": 0.084},
    "SD 3.5 Medium": {"transformer": 2.47, "CLIP-L": 0.123, "CLIP-G": 0.695, "T5-XXL": 4.76, "vae": 0.084},
}
#: Bytes per weight of the transformer in each format (text encoders and VAE stay bf16).
FORMATS = {"bf16": 2.0, "GGUF Q8_0": 34 / 32, "GGUF Q4_K": 144 / 256}
#: Assumed working set for one 1024x1024 image beyond the weights (activations, decode, runtime), GB.
WORKING_GB = 2.0
USABLE_SHARE = 0.75
MEMORY_GB = (8, 16, 32)


def needs_gb(model: str, fmt: str, offload: bool) -> float:
    parts = PARTS[model]
    sizes = {name: count * (FORMATS[fmt] if name == "transformer" else 2.0) for name, count in parts.items()}
    weights = max(sizes.values()) if offload else sum(sizes.values())
    return weights + WORKING_GB


def main() -> None:
    print("COMPUTED from parameter counts and formats (not measured); working set assumed "
          f"{WORKING_GB:g} GB; a model fits when it needs at most {USABLE_SHARE:.0%} of the memory.\n")
    print(f"{'model':20} {'transformer':11} {'whole GB':>8} {'offload GB':>10}  " +
          "  ".join(f"{m:>2} GB" for m in MEMORY_GB))
    for model in PARTS:
        for fmt in FORMATS:
            whole, off = needs_gb(model, fmt, False), needs_gb(model, fmt, True)
            cells = []
            for mem in MEMORY_GB:
                usable = mem * USABLE_SHARE
                cells.append("whole" if whole <= usable else "offld" if off <= usable else "  no ")
            print(f"{model:20} {fmt:11} {whole:8.1f} {off:10.1f}  " + "  ".join(f"{c:>5}" for c in cells))


if __name__ == "__main__":
    main()
