"""Inpainting's cost per step against plain image-to-image, and against diffusers' inpaint pipeline.

    python bench/bench_inpaint.py                          # tiny random model, CPU
    python bench/bench_inpaint.py --sd15 --size 256 --steps 6 --runs 3

Same model, seed, input image and strength for every side; the mask covers the middle half.
The three sides run interleaved, run after run, so a change in the machine's load hits them
alike. Printed: the load average before and after; median seconds per job for HeyIm img2img,
HeyIm inpaint (the blending path of ordinary models) and diffusers' StableDiffusionInpaintPipeline;
HeyIm's denoising time per step (the loop's own timing, without text/VAE encode and decode);
and the ratios: the blend's extra time per step and per job against img2img, ours against
diffusers' inpaint pipeline per job.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="full SD 1.5 architecture with random weights")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "heyim-bench"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from heyim_desktop.core.loop import run_loop
    from heyim_desktop.core.masking import InpaintSpec
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.schedulers import build_scheduler
    from heyim_desktop.core.torch_engine import load_torch_engine

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.sd15:
        from sd15_random import build_sd15_random

        model = build_sd15_random(work / "sd15-random", "float32")
    else:
        from heyim_desktop.core.demo_model import build_demo_model

        model = work / "tiny"
        if not (model / "model_index.json").is_file():
            build_demo_model(model)
    engine = load_torch_engine(model, device="cpu")
    comps = engine.components
    size = args.size
    rng = np.random.RandomState(0)
    image = Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))
    mask_arr = np.zeros((size, size), np.uint8)
    mask_arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    mask = Image.fromarray(mask_arr, mode="L")
    base = GenerationRequest(prompt="a red fox", steps=args.steps, seed=1, width=size, height=size, init_image=image,
                             strength=0.99, guidance_boost=0.0, scheduler="DPM++ 2M")
    inpaint = base.replace(inpaint=InpaintSpec(mask=mask, blur=0))

    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                          unet=comps.unet_model, scheduler=build_scheduler("DPM++ 2M", comps.scheduler_config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    per_step: dict[str, list[float]] = {"img2img": [], "inpaint": []}

    def ours(req: GenerationRequest, side: str | None = None) -> float:
        t0 = time.perf_counter()
        out = run_loop(comps, req)
        if side is not None:
            per_step[side].append(out.timings["per_step"])
        return time.perf_counter() - t0

    def theirs() -> float:
        t0 = time.perf_counter()
        pipe("a red fox", image=image, mask_image=mask, height=size, width=size, strength=0.99,
             num_inference_steps=args.steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(1),
             output_type="np")
        return time.perf_counter() - t0

    import os

    load_before = os.getloadavg()
    ours(base), ours(inpaint), theirs()  # warm-up
    times: dict[str, list[float]] = {"img2img": [], "inpaint": [], "diffusers inpaint": []}
    for _ in range(args.runs):
        times["img2img"].append(ours(base, "img2img"))
        times["inpaint"].append(ours(inpaint, "inpaint"))
        times["diffusers inpaint"].append(theirs())
    load_after = os.getloadavg()
    steps = int(args.steps * 0.99)
    label = "SD 1.5 architecture" if args.sd15 else "tiny model"
    print(f"{label}, {size}x{size}, {steps} steps run, CPU ({os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}), median of {args.runs}")
    print("  load average before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(*load_before, *load_after))
    med = {k: statistics.median(v) for k, v in times.items()}
    step = {k: statistics.median(v) for k, v in per_step.items()}
    for k, v in med.items():
        denoise = f"  denoise {step[k] * 1000:8.1f} ms/step" if k in step else ""
        print(f"  {k:18s} {v:8.3f} s/job{denoise}")
    extra_step = (step["inpaint"] - step["img2img"]) / step["img2img"] * 100
    extra_job = (med["inpaint"] - med["img2img"]) / med["img2img"] * 100
    print(f"  blend path vs img2img: {extra_step:+.1f}% per step, {extra_job:+.1f}% per job; "
          f"ours/diffusers inpaint per job: {med['inpaint'] / med['diffusers inpaint']:.3f}")


if __name__ == "__main__":
    main()
