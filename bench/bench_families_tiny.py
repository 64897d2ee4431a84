"""Our family engine against diffusers' bare pipeline on the tiny random models: seconds per image.

    .venv/bin/python bench/bench_families_tiny.py [--size 64] [--steps 4] [--repeats 5] [--threads 1]

Builds each tiny model (Z-Image, FLUX.2 [klein], SD 3.5: diffusers' fast-test shapes), then times,
interleaved in the same run, (a) ``FamilyEngine.generate`` with a progress callback (previews on) and
(b) the same pipeline object called directly with the same seed and settings, output_type "np".
Prints the median seconds per image for each and the ratio ours / bare (the engine's overhead:
callback, previews, Pillow conversion). Tiny models: the ratio, not the seconds, is the figure.
Full-size architectures, peak memory and GPU runs at 1024x1024: bench/bench_families.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from heyim_desktop.core.families.tiny import TINY_FAMILIES, build_tiny_model
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-families-"))
    print(f"{'family':10} {'ours s/img':>11} {'bare s/img':>11} {'ratio':>7}")
    for family in TINY_FAMILIES:
        folder = build_tiny_model(family, root / family)
        engine = load_engine(str(folder), device="cpu")
        request = GenerationRequest("a red fox in the forest", steps=args.steps, guidance=3.0, seed=1,
                                    width=args.size, height=args.size, scheduler="Euler")
        kwargs = engine._call_kwargs(request)  # type: ignore[attr-defined]
        ours: list[float] = []
        bare: list[float] = []
        engine.generate(request, progress=lambda p: None)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            engine.generate(request, progress=lambda p: None)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1))  # type: ignore[attr-defined]
            bare.append(time.perf_counter() - t0)
        o, b = statistics.median(ours), statistics.median(bare)
        print(f"{family:10} {o:11.4f} {b:11.4f} {o / b:7.3f}")
        engine.close()


if __name__ == "__main__":
    main()
