#!/usr/bin/env python3
"""Core ML benchmark (macOS): load times and seconds per image, per compute unit.

    python bench/bench_coreml.py MODEL_FOLDER [--steps 30] [--compute-units CPU_AND_NE CPU_AND_GPU ALL]
    python bench/bench_coreml.py --demo --steps 4        # the tiny random model, converted on the spot

MODEL_FOLDER is a Core ML resources folder (Apple's layout, e.g. apple/coreml-stable-diffusion-v1-5
split_einsum/compiled). Its size is fixed by the model (512x512 for Apple's SD 1.5), so the
numbers compare with Apple's published figures for the same model, steps and compute units.

* cold load: first load in this run with an empty compiled-model cache (an .mlpackage is
  compiled here; macOS may still keep its own Neural Engine cache from earlier runs).
* warm load: the same model loaded again (the cache is full).
* first image / image: seconds for one image, the first one including Core ML's warm-up.
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
    parser.add_argument("model", nargs="?", help="Core ML resources folder")
    parser.add_argument("--demo", action="store_true", help="convert and use the tiny random model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=2, help="images per compute unit (default 2)")
    parser.add_argument("--compute-units", nargs="+", default=["CPU_AND_NE", "CPU_AND_GPU", "ALL"])
    parser.add_argument("--scheduler", default="DPM++ 2M")
    args = parser.parse_args()
    if sys.platform != "darwin":
        print("bench_coreml.py measures Core ML, which runs only on macOS (Apple Silicon); nothing to do here.", file=sys.stderr)
        return 2
    if not args.model and not args.demo:
        parser.error("give a Core ML model folder, or --demo")

    import platform

    from heyim_desktop.core import GenerationRequest
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.compute_units import machine_id, normalise
    from heyim_desktop.core.coreml.detect import detect_coreml_folder
    from heyim_desktop.core.coreml.engine import load_coreml_engine
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    work = Path(tempfile.mkdtemp(prefix="heyim-bench-coreml-"))
    folder = Path(args.model).expanduser() if args.model else None
    if args.demo:
        from heyim_desktop.core.coreml.convert import convert_to_coreml
        from heyim_desktop.core.demo_model import build_demo_model

        t0 = time.perf_counter()
        folder = convert_to_coreml(build_demo_model(work / "tiny"), work / "tiny-coreml")
        print(f"converted the tiny model in {time.perf_counter() - t0:.1f}s")
    assert folder is not None
    info = detect_coreml_folder(folder)
    w, h = info.size
    print(f"machine: {machine_id()}, macOS {platform.mac_ver()[0]}")
    print(f"model: {info.name} ({info.kind}, {info.attention}, {w}x{h}, UNet batch {info.batch}, "
          f"{'compiled' if all(m.compiled for m in info.models) else 'mlpackage'})")
    print(f"{args.steps} steps, {args.scheduler}, guidance 7.5\n")
    print(f"{'compute units':<14}{'cold load s':>12}{'warm load s':>12}{'first image s':>15}{'image s':>10}{'step ms':>9}")
    request = GenerationRequest(prompt="a photo of an astronaut riding a horse on mars", steps=args.steps,
                                seed=93, width=w, height=h, scheduler=args.scheduler)
    for raw in args.compute_units:
        units = normalise(raw)
        cache = CompiledModelCache(work / f"cache-{units}")
        try:
            t0 = time.perf_counter()
            engine = load_coreml_engine(folder, units, cache=cache)
            cold = time.perf_counter() - t0
            engine.close()
            t0 = time.perf_counter()
            engine = load_coreml_engine(folder, units, cache=cache)
            warm = time.perf_counter() - t0
            times = []
            per_step = 0.0
            for i in range(max(1, args.images)):
                t0 = time.perf_counter()
                result = engine.generate(request.replace(seed=93 + i))
                times.append(time.perf_counter() - t0)
                per_step = result.timings.get("per_step", 0.0)
            engine.close()
        except Exception as exc:  # noqa: BLE001 - one unit failing should not hide the others
            print(f"{units:<14}failed: {exc}")
            continue
        steady = sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]
        print(f"{units:<14}{cold:>12.2f}{warm:>12.2f}{times[0]:>15.2f}{steady:>10.2f}{per_step * 1000:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
