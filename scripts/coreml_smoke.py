#!/usr/bin/env python3
"""Core ML smoke check from a checkout (the built app runs the same with `HeyIm --coreml-smoke`):

    python scripts/coreml_smoke.py [--compute-units CPU_AND_NE]

coremltools' native extension imports, a tiny ML program compiles, loads and predicts what
numpy computes. Exit 0 when Core ML works, 1 when it does not, 2 when not on macOS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compute-units", default="CPU_AND_NE", choices=("CPU_AND_NE", "CPU_AND_GPU", "ALL", "CPU_ONLY"))
    args = parser.parse_args()
    from heyim_desktop.core.coreml.smoke import run_coreml_smoke

    return run_coreml_smoke(args.compute_units)


if __name__ == "__main__":
    sys.exit(main())
