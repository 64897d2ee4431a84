#!/usr/bin/env python3
"""Core ML on a Mac: seconds per image for HeyIm's Neural Engine UNet layout against the old one.

    python bench/bench_coreml_layouts.py SD_MODEL_DIR [--size 512] [--steps 20] [--compute-units CPU_AND_NE]
    python bench/bench_coreml_layouts.py --demo --steps 4      # the tiny random model (a smoke run)

Converts one diffusers SD 1.x/2.x folder twice in the same run, with the same weights and size:

* ``ane``: ``--attention split_einsum`` today (core/coreml/ane.py: (B, C, 1, S) tensors, 1x1
  convolutions, per-head einsums, chunked queries);
* ``old``: what ``split_einsum`` wrote before (diffusers' UNet with a per-head einsum processor,
  (B, S, C) tensors and ``linear`` ops);

then loads each on the chosen compute units (cold: compile + load, in a fresh cache) and times
``--images`` images (the first one, with Core ML's warm-up, reported apart). The same prompt,
seed, scheduler and steps for both; the ratio old/ane is the speed-up. macOS only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def convert(source: Path, dest: Path, layout: str, size: int) -> float:
    from heyim_desktop.core.coreml import modules as M  # noqa: N812
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    real = M.unet_for

    def old_layout(unet, attention):  # type: ignore[no-untyped-def]
        M.use_attention(unet, attention)  # the diffusers UNet with the per-head einsum processor
        return unet

    t0 = time.perf_counter()
    if layout == "old":
        M.unet_for = old_layout  # type: ignore[assignment]
    try:
        convert_to_coreml(source, dest, size=(size, size), attention="split_einsum", include_encoder=False)
    finally:
        M.unet_for = real  # type: ignore[assignment]
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a diffusers SD 1.x/2.x folder")
    parser.add_argument("--demo", action="store_true", help="use the tiny random model")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--compute-units", default="CPU_AND_NE")
    args = parser.parse_args()
    if sys.platform != "darwin":
        print("bench_coreml_layouts.py measures Core ML, which runs only on macOS; nothing to do here.", file=sys.stderr)
        return 2
    if not args.model and not args.demo:
        parser.error("give a diffusers model folder, or --demo")

    import platform

    from heyim_desktop.core import GenerationRequest
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.compute_units import machine_id
    from heyim_desktop.core.coreml.engine import load_coreml_engine
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    work = Path(tempfile.mkdtemp(prefix="heyim-bench-layouts-"))
    if args.demo:
        from heyim_desktop.core.demo_model import build_demo_model

        source = build_demo_model(work / "tiny")
    else:
        source = Path(args.model).expanduser()
    print(f"machine: {machine_id()}, macOS {platform.mac_ver()[0]}; {source.name} at {args.size}x{args.size}, "
          f"{args.steps} steps, {args.compute_units}")
    request = GenerationRequest(prompt="a photo of an astronaut riding a horse on mars", steps=args.steps, seed=93,
                                width=args.size, height=args.size, scheduler="DPM++ 2M")
    rows = {}
    for layout in ("ane", "old"):
        folder = work / f"coreml-{layout}"
        seconds = convert(source, folder, layout, args.size)
        t0 = time.perf_counter()
        engine = load_coreml_engine(folder, f"{args.compute_units};full-memory", cache=CompiledModelCache(work / f"cache-{layout}"))
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.generate(request)
        first = time.perf_counter() - t0
        times = []
        for i in range(args.images):
            t0 = time.perf_counter()
            engine.generate(request.replace(seed=94 + i))
            times.append(time.perf_counter() - t0)
        engine.close()
        times.sort()
        rows[layout] = (seconds, load, first, times[len(times) // 2])
        print(f"{layout:<4} convert {seconds:7.1f}s  compile+load {load:7.1f}s  first image {first:7.2f}s  "
              f"image (median of {args.images}) {rows[layout][3]:7.2f}s")
    print(f"speed-up of the Neural Engine layout (old / ane, s per image): {rows['old'][3] / rows['ane'][3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
