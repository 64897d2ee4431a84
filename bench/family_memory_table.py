"""What fits in 8, 16 and 32 GB for Z-Image Turbo, FLUX.2 [klein] 4B and SD 3.5 Medium, per weight format.

    python bench/family_memory_table.py

Prints the table HeyIm's catalogue and model library say in words (core.families.fit): the parts'
sizes measured from the released architectures saved in bf16 and the working set of one 1024x1024
image measured at full width (both by bench/bench_families.py: the figures are in
core/families/fit.py with the commands that produced them). A GGUF transformer takes its
quantization's bytes per weight (for the catalogue's Q4_K_M files, the published file sizes); a GGUF
text encoder is dequantized on load (transformers does), so it saves download and disk, not memory.

Columns: the peak with every part loaded ("whole"), and with Save memory (text encoders and
transformer loaded in turn: the larger of the text encoders and transformer + VAE + working set);
then per memory size whether it fits as it is, with Save memory, or not (a fit: at most 3/4 of it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from heyim_desktop.core.families.fit import (  # noqa: E402
    MEMORY_SIZES_GB,
    USABLE_SHARE,
    WORKING_SET_GB,
    fit,
)

LABELS = {"zimage": "Z-Image Turbo", "flux2": "FLUX.2 [klein] 4B", "sd3": "SD 3.5 Medium"}
#: Published Q4_K_M transformer file sizes (GB) where the catalogue offers one.
Q4_FILES = {"zimage": 5.0, "flux2": 2.6}


def main() -> None:
    print(f"A model fits when its peak takes at most {USABLE_SHARE:.0%} of the memory; working set per "
          "1024x1024 image: " + ", ".join(f"{LABELS[k]} {v:g} GB" for k, v in WORKING_SET_GB.items()) + "\n")
    print(f"{'model':18} {'transformer':14} {'whole GB':>8} {'save GB':>8}  " +
          "  ".join(f"{m:>5} GB" for m in MEMORY_SIZES_GB))
    for family, label in LABELS.items():
        for fmt in ("bf16", "Q8_0", "Q4_K_M"):
            known = Q4_FILES.get(family) if fmt == "Q4_K_M" else None
            peaks = fit(family, fmt, transformer_gb=known)
            cells = [{"whole": "as is", "low": "save", "no": "no"}[peaks.verdict(m)] for m in MEMORY_SIZES_GB]
            name = fmt + (" (file)" if known else "")
            print(f"{label:18} {name:14} {peaks.whole_gb:8.1f} {peaks.low_gb:8.1f}  " +
                  "  ".join(f"{c:>8}" for c in cells))


if __name__ == "__main__":
    main()
