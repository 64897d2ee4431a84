"""What one ControlNet adds per denoising step, against the same job without it.

    python bench/bench_controlnet.py                      # full SD 1.5 architecture, 256x256, 3 steps, CPU
    python bench/bench_controlnet.py --size 512 --steps 20 --device cuda

The model is the full-size SD 1.5 architecture with random weights (sd15_random.py) and
the ControlNet is ``ControlNetModel.from_unet`` on it (full size, 361M parameters), saved
once as a diffusers folder and loaded by HeyIm's own loader. Both configurations run in one
process on the same loaded weights, alternating after a warm-up; the per-step medians, the
extra time and the ratio are printed. diffusers' StableDiffusionPipeline and
StableDiffusionControlNetPipeline on the same modules are the peer (``--no-diffusers`` skips).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


def _controlnet(model: Path, dest: Path) -> Path:
    if (dest / "config.json").is_file():
        return dest
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    print("building a full-size ControlNet from the UNet (once)...", file=sys.stderr)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", local_files_only=True)
    torch.manual_seed(1)
    net = ControlNetModel.from_unet(unet)
    with torch.no_grad():  # the zero convolutions would add nothing; cost is the same either way
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.normal_(0, 0.01)
    tmp = dest.with_name(dest.name + ".partial")
    net.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(dest)
    return dest


def _hint(size: int):  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(size, size, 3) > 0.9).astype(np.uint8) * 255)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "heyim-bench"))
    args = ap.parse_args()

    import torch
    from sd15_random import build_sd15_random

    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.core.torch_engine import load_torch_engine

    quiet_third_party()
    if args.device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print("building full-size SD 1.5 architecture with random weights (once)...", file=sys.stderr)
    model = build_sd15_random(work / "sd15-random", "float16" if args.device == "cuda" else "float32")
    cn_path = _controlnet(model, work / "controlnet-sd15-random")
    engine = load_torch_engine(model, device=args.device)
    comps = engine.components
    assert comps is not None
    t0 = time.perf_counter()
    net = comps.controlnet_model(str(cn_path))  # type: ignore[attr-defined]
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in net.parameters())
    base = GenerationRequest(prompt="a house by a lake", negative_prompt="blurry", steps=args.steps, guidance=7.0,
                             seed=3, width=args.size, height=args.size, scheduler="Euler")
    guided = base.replace(controlnets=(ControlUnit(model=str(cn_path), image=_hint(args.size)),))

    def ours(req: GenerationRequest) -> float:
        return engine.generate(req).timings["per_step"]

    pipes = {}
    if not args.no_diffusers:
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

        from heyim_desktop.core.schedulers import build_scheduler

        parts = dict(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,  # type: ignore[attr-defined]
                     unet=comps.unet_model, scheduler=build_scheduler("Euler", comps.scheduler_config),  # type: ignore[attr-defined]
                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipes["none"] = StableDiffusionPipeline(**parts)
        pipes["one"] = StableDiffusionControlNetPipeline(controlnet=net, **parts)
        for p in pipes.values():
            p.set_progress_bar_config(disable=True)

    def theirs(kind: str) -> float:
        steps: list[float] = []
        last = [time.perf_counter()]

        def tick(pipe, i, t, kw):  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            steps.append(now - last[0])
            last[0] = now
            return kw

        kwargs = dict(height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.0,
                      negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(3),
                      callback_on_step_end=tick, output_type="latent")
        if kind == "one":
            kwargs["image"] = _hint(args.size)
        with torch.inference_mode():
            last[0] = time.perf_counter()
            pipes[kind]("a house by a lake", **kwargs)
        return statistics.median(steps[1:] or steps)  # the first tick includes prompt/image setup

    print(f"model: SD 1.5 architecture (random), ControlNet {params / 1e6:.0f}M parameters, loaded in {load_s:.1f}s; "
          f"{args.size}x{args.size}, {args.steps} steps, {args.device}, torch threads {torch.get_num_threads()}")
    ours(base)
    ours(guided)  # warm-up
    results: dict[str, list[float]] = {"ours none": [], "ours one": [], "diffusers none": [], "diffusers one": []}
    for _ in range(args.runs):
        results["ours none"].append(ours(base))
        results["ours one"].append(ours(guided))
        if pipes:
            results["diffusers none"].append(theirs("none"))
            results["diffusers one"].append(theirs("one"))
    med = {k: statistics.median(v) for k, v in results.items() if v}
    for k, v in med.items():
        print(f"{k:15s} {v * 1000:8.0f} ms/step  (runs: {', '.join(f'{x * 1000:.0f}' for x in results[k])})")
    extra = med["ours one"] - med["ours none"]
    print(f"HeyIm: one ControlNet adds {extra * 1000:.0f} ms/step ({med['ours one'] / med['ours none']:.2f}x the step without)")
    if pipes:
        d_extra = med["diffusers one"] - med["diffusers none"]
        print(f"diffusers: one ControlNet adds {d_extra * 1000:.0f} ms/step "
              f"({med['diffusers one'] / med['diffusers none']:.2f}x); HeyIm/diffusers with one ControlNet: "
              f"{med['ours one'] / med['diffusers one']:.2f}")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
