"""Single-file checkpoint loading on a device: the same model as a diffusers folder and as one
original-layout .safetensors file must load and give the same image. Prints figures.

    python bench/device_single_file.py --sd15 --device cuda     # full SD 1.5 architecture
    python bench/device_single_file.py --device cpu             # the tiny model
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src"), str(HERE.parent / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sd15", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "heyim-bench"))
    args = ap.parse_args()
    import numpy as np

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.thirdparty import quiet_third_party
    from ldm_layout import write_single_file

    quiet_third_party()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.sd15:
        from sd15_random import build_sd15_random

        folder = build_sd15_random(work / "sd15-random", "float16" if args.device == "cuda" else "float32")
    else:
        from heyim_desktop.core.demo_model import build_demo_model

        folder = work / "tiny"
        if not (folder / "model_index.json").is_file():
            build_demo_model(folder)
    single = work / f"{folder.name}-single.safetensors"
    if not single.exists():
        write_single_file(folder, single)
    print(f"single file: {single} ({single.stat().st_size / 2**20:.0f} MB)")
    size = args.size if args.sd15 else 64
    req = GenerationRequest(prompt="a red fox", steps=args.steps, seed=7, width=size, height=size)
    images = {}
    for label, ref in (("folder", str(folder)), ("single file", str(single))):
        t0 = time.perf_counter()
        engine = load_engine(ref, device=args.device)
        loaded = time.perf_counter() - t0
        comps = engine.components  # type: ignore[attr-defined]
        res = engine.generate(req)
        images[label] = np.asarray(res.images[0].image, dtype=np.int16)
        print(f"{label:12} load {loaded:6.2f} s  generate {res.timings['total']:6.2f} s  "
              f"{engine.name} {str(comps.dtype).replace('torch.', '')}")
        engine.close()
    d = np.abs(images["folder"] - images["single file"])
    print(f"folder vs single file, same seed: max abs {d.max()} / 255, mean {d.mean():.4f}")


if __name__ == "__main__":
    main()
