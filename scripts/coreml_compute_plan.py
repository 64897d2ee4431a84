#!/usr/bin/env python3
"""On a Mac: convert the tiny model with HeyIm's converter, load it on the Neural Engine,
generate, and check with Core ML's compute plan that the UNet's costliest ops run on the
Neural Engine. The macOS workflow (.github/workflows/macos.yml) runs it; run it yourself with

    python scripts/coreml_compute_plan.py [--folder CONVERTED_FOLDER] [--min-ne-share 0.8]

Without --folder it builds the tiny random model and converts it (split_einsum, 256x256).
Exit status 0 when the check passes, 1 when ops land elsewhere, 2 when not on macOS.
Needs macOS 14.4 or later (Core ML's MLComputePlan) and coremltools 8 or later.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a converted Core ML folder (default: convert the tiny model)")
    parser.add_argument("--compute-units", default="CPU_AND_NE")
    parser.add_argument("--min-ne-share", type=float, default=0.8, help="share of the UNet's estimated cost on the NE")
    parser.add_argument("--top", type=int, default=5, help="the costliest N ops must all be on the NE")
    args = parser.parse_args()
    if sys.platform != "darwin":
        print("coreml_compute_plan.py needs macOS (Core ML); nothing to do here.", file=sys.stderr)
        return 2

    import numpy as np

    from heyim_desktop.core import GenerationRequest
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.compute_plan import check_neural_engine, read_placements, summarise
    from heyim_desktop.core.coreml.engine import load_coreml_engine
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    work = Path(tempfile.mkdtemp(prefix="heyim-compute-plan-"))
    folder = Path(args.folder).expanduser() if args.folder else None
    if folder is None:
        from heyim_desktop.core.coreml.convert import convert_to_coreml
        from heyim_desktop.core.demo_model import build_demo_model

        t0 = time.perf_counter()
        folder = convert_to_coreml(build_demo_model(work / "tiny"), work / "tiny-coreml", size=(256, 256))
        print(f"converted the tiny model (split_einsum) in {time.perf_counter() - t0:.1f}s")
    cache = CompiledModelCache(work / "compiled")
    t0 = time.perf_counter()
    engine = load_coreml_engine(folder, f"{args.compute_units};full-memory", cache=cache)
    print(f"loaded on {args.compute_units} in {time.perf_counter() - t0:.1f}s")
    image = engine.generate(GenerationRequest(prompt="a red cube", steps=4, seed=1, width=engine.default_size[0],
                                              height=engine.default_size[1])).images[0].image
    pixels = np.asarray(image, dtype=np.float32)
    engine.close()
    if not np.isfinite(pixels).all() or pixels.std() == 0:
        print("the generated image is blank or not finite", file=sys.stderr)
        return 1
    print(f"generated {image.size[0]}x{image.size[1]}, pixel std {pixels.std():.1f}")
    unet = next(p for p in cache.root.glob("Unet-*.mlmodelc"))
    summary = summarise(read_placements(unet, args.compute_units))
    print(summary.describe())
    problems = check_neural_engine(summary, args.min_ne_share, args.top)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print("compute plan: OK" if not problems else "compute plan: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
