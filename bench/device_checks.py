"""Checks that need a GPU: the same seed gives the same image on CPU and CUDA, and our CUDA
output agrees with diffusers'. Prints figures; run on a CUDA machine.

    python bench/device_checks.py --model /path/to/diffusers-folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from heyim_desktop.core.loop import run_loop
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.schedulers import build_scheduler
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.core.torch_engine import load_torch_engine

    quiet_third_party()
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=args.steps, seed=1234,
                            width=args.size, height=args.size, scheduler="Euler a")
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, 4, args.size // 8, args.size // 8)
    noise_cpu = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(1234), device=torch.device("cpu"))
    noise_gpu = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(1234), device=torch.device("cuda"))
    print(f"initial noise, same seed, CPU vs CUDA: max abs {(noise_cpu - noise_gpu.cpu()).abs().max().item():.3g}")
    cpu = run_loop(load_torch_engine(args.model, device="cpu").components, req).images
    for precision in ("fp32", "fp16"):
        gpu = run_loop(load_torch_engine(args.model, device="cuda", precision=precision).components, req).images
        d = np.abs(cpu - gpu)
        print(f"same seed, CPU fp32 vs CUDA {precision}: max abs {d.max():.4f}, mean abs {d.mean():.5f} "
              f"(images in [0, 1])")
    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=torch.float16, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)
    ref = pipe(req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=args.steps, guidance_scale=7.5,
               width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1234),
               output_type="np").images
    ours = run_loop(load_torch_engine(args.model, device="cuda").components, req).images
    d = np.abs(ours - ref)
    print(f"CUDA fp16, HeyIm vs diffusers: max abs {d.max():.6f}, mean abs {d.mean():.6f}")


if __name__ == "__main__":
    main()
