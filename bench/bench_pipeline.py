"""HeyIm's engine against diffusers' StableDiffusion(XL)Pipeline on the same model, side by side.

    python bench/bench_pipeline.py                       # tiny random model, CPU
    python bench/bench_pipeline.py --sd15 --size 256 --steps 10 --runs 3
    python bench/bench_pipeline.py --sd15 --size 512 --steps 30 --device cuda   # on a GPU
    python bench/bench_pipeline.py --sdxl --size 256 --steps 2 --runs 1          # full SDXL, CPU
    python bench/bench_pipeline.py --sdxl --size 1024 --steps 30 --device cuda  # SDXL fp16 on a GPU

Timing: both run in one process on the same loaded weights, alternating (ours, diffusers,
ours, ...) after a warm-up; medians and the ratio ours/diffusers are printed. Loop overhead:
one extra run of ours with the UNet timed separately (synchronised), the rest per step is
what the loop itself costs. Memory: each side loads the model from disk in its own child
process and reports peak RSS and, on CUDA, peak allocated GPU memory.

SDXL on the CPU: its fp32 weights are ~14 GB, so the timing run hands diffusers HeyIm's
loaded modules instead of a second copy (same weights, same threads); on a GPU diffusers
loads its own copy as usual. The memory children still load one side each from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


def _model_path(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.sdxl:
        from sdxl_random import build_sdxl_random

        print("building full-size SDXL architecture with random weights (once)...", file=sys.stderr)
        return build_sdxl_random(work / "sdxl-random", "float16" if args.device == "cuda" else "float32")
    if args.sd15:
        from sd15_random import build_sd15_random

        print("building full-size SD 1.5 architecture with random weights (once)...", file=sys.stderr)
        return build_sd15_random(work / "sd15-random", "float16" if args.device == "cuda" else "float32")
    from heyim_desktop.core.demo_model import build_demo_model

    dest = work / "tiny"
    return dest if (dest / "model_index.json").is_file() else build_demo_model(dest)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _weights_bytes(components) -> int:  # type: ignore[no-untyped-def]
    total = 0
    for module in (components.unet_model, components.vae, components.text_encoder,
                   getattr(components, "text_encoder_2", None)):
        if module is None:
            continue
        total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total


def run_timing(args: argparse.Namespace, model: Path) -> dict[str, float]:
    import torch

    from heyim_desktop.core.loop import run_loop
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.schedulers import build_scheduler
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.core.torch_engine import load_torch_engine

    quiet_third_party()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = load_torch_engine(model, device=args.device)
    comps = engine.components
    pipe = _diffusers_pipeline(args, model, comps)
    pipe.set_progress_bar_config(disable=True)
    req = GenerationRequest(prompt="a red fox in the snow, photo", negative_prompt="blurry", steps=args.steps,
                            guidance=7.5, seed=1, width=args.size, height=args.size, scheduler=args.scheduler)
    device = comps.device.type

    def ours(components=comps) -> float:  # type: ignore[no-untyped-def]
        _sync(device)
        t0 = time.perf_counter()
        run_loop(components, req, previews=False)
        _sync(device)
        return time.perf_counter() - t0

    def theirs() -> float:
        _sync(device)
        t0 = time.perf_counter()
        pipe.scheduler = build_scheduler(args.scheduler, comps.scheduler_config)
        pipe(req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=args.steps, guidance_scale=7.5,
             width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1), output_type="np")
        _sync(device)
        return time.perf_counter() - t0

    ours(), theirs()  # warm-up (kernels, allocator, caches)
    t_ours, t_theirs = [], []
    for i in range(args.runs):
        if i % 2 == 0:
            t_ours.append(ours())
            t_theirs.append(theirs())
        else:
            t_theirs.append(theirs())
            t_ours.append(ours())

    # Loop overhead: the same run with the UNet timed on its own.
    unet_time = [0.0]
    real_unet = comps.unet

    def timed_unet(*a, **k):  # type: ignore[no-untyped-def]
        _sync(device)
        t0 = time.perf_counter()
        out = real_unet(*a, **k)
        _sync(device)
        unet_time[0] += time.perf_counter() - t0
        return out

    comps.unet = timed_unet
    out = run_loop(comps, req, previews=True, progress=lambda p: None)
    comps.unet = real_unet
    steps = args.steps
    outside = (out.timings["denoise"] - unet_time[0]) / steps
    return {
        "ours_median_s": statistics.median(t_ours),
        "diffusers_median_s": statistics.median(t_theirs),
        "ratio": statistics.median(t_ours) / statistics.median(t_theirs),
        "unet_ms_per_step": unet_time[0] / steps * 1000,
        "outside_unet_ms_per_step": outside * 1000,
        "weights_mb": _weights_bytes(comps) / 2**20,
        "device": str(comps.device),
        "dtype": str(comps.dtype).replace("torch.", ""),
    }


def _diffusers_pipeline(args: argparse.Namespace, model: Path, comps):  # type: ignore[no-untyped-def]
    """diffusers' own pipeline for the timing run."""
    if args.sdxl:
        from diffusers import StableDiffusionXLPipeline

        if comps.device.type == "cpu":  # one copy of the 14 GB fp32 weights, shared (see the docstring)
            return StableDiffusionXLPipeline(
                vae=comps.vae, text_encoder=comps.text_encoder, text_encoder_2=comps.text_encoder_2,
                tokenizer=comps.tokenizer, tokenizer_2=comps.tokenizer_2, unet=comps.unet_model,
                scheduler=_scheduler(args, comps.scheduler_config), add_watermarker=False,
            )
        return StableDiffusionXLPipeline.from_pretrained(
            model, dtype=comps.dtype, local_files_only=True, add_watermarker=False
        ).to(comps.device)
    from diffusers import StableDiffusionPipeline

    # diffusers loads its own copy, as a diffusers user would: our CUDA layout choices must not help it.
    return StableDiffusionPipeline.from_pretrained(
        model, dtype=comps.dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
    ).to(comps.device)


def _scheduler(args: argparse.Namespace, config):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.schedulers import build_scheduler

    return build_scheduler(args.scheduler, config)


def _peak_rss_mb() -> float:
    """This process's own peak RSS. On Linux ru_maxrss also counts the parent's peak before
    exec (it is carried over), so VmHWM of the current address space is read instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def run_memory_child(args: argparse.Namespace, model: Path, side: str) -> dict[str, float]:
    """Runs in a child process: load from disk, generate once, report peaks."""
    import torch

    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    if args.threads:
        torch.set_num_threads(args.threads)
    kw = dict(prompt="a red fox", num_inference_steps=args.steps, guidance_scale=7.5, width=args.size, height=args.size)
    if side == "ours":
        from heyim_desktop.core.request import GenerationRequest
        from heyim_desktop.core.torch_engine import load_torch_engine

        engine = load_torch_engine(model, device=args.device)
        device = engine.components.device
        engine.generate(GenerationRequest(prompt="a red fox", steps=args.steps, seed=1, width=args.size,
                                          height=args.size, scheduler=args.scheduler))
    else:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        from heyim_desktop.core.schedulers import build_scheduler
        from heyim_desktop.core.torch_engine import pick_device

        device = pick_device(args.device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if args.sdxl:
            pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype, local_files_only=True,
                                                             add_watermarker=False).to(device)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                           requires_safety_checker=False, local_files_only=True).to(device)
        pipe.scheduler = build_scheduler(args.scheduler, pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        pipe(**kw, generator=torch.Generator("cpu").manual_seed(1))
    out = {"peak_rss_mb": _peak_rss_mb()}
    if device.type == "cuda":
        out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a diffusers-format folder (default: the tiny random model)")
    model_kind = ap.add_mutually_exclusive_group()
    model_kind.add_argument("--sd15", action="store_true", help="full-size SD 1.5 architecture, random weights")
    model_kind.add_argument("--sdxl", action="store_true", help="full-size SDXL base architecture, random weights")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scheduler", default="DPM++ 2M")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "heyim-bench"))
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--memory-child", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    model = _model_path(args)
    if args.memory_child:
        print(json.dumps(run_memory_child(args, model, args.memory_child)))
        return
    figures: dict[str, object] = {"model": str(model), "size": args.size, "steps": args.steps,
                                  "scheduler": args.scheduler, "runs": args.runs}
    figures.update(run_timing(args, model))
    if not args.no_memory:
        for side in ("ours", "diffusers"):
            cmd = [sys.executable, __file__, "--memory-child", side, "--model", str(model), "--size", str(args.size),
                   "--steps", str(args.steps), "--device", args.device, "--scheduler", args.scheduler,
                   "--threads", str(args.threads), *(["--sdxl"] if args.sdxl else [])]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            for key, value in json.loads(res.stdout.strip().splitlines()[-1]).items():
                figures[f"{side}_{key}"] = value
    w = 26
    print(f"{'model':<{w}} {figures['model']}")
    print(f"{'device / dtype':<{w}} {figures['device']} / {figures['dtype']}")
    print(f"{'size, steps, scheduler':<{w}} {args.size}x{args.size}, {args.steps}, {args.scheduler}")
    print(f"{'weights':<{w}} {figures['weights_mb']:.0f} MB")
    print(f"{'':<{w}} {'HeyIm':>12} {'diffusers':>12}")
    print(f"{'median s / image':<{w}} {figures['ours_median_s']:>12.3f} {figures['diffusers_median_s']:>12.3f}"
          f"   ratio {figures['ratio']:.3f}")
    if not args.no_memory:
        print(f"{'peak RSS MB':<{w}} {figures['ours_peak_rss_mb']:>12.0f} {figures['diffusers_peak_rss_mb']:>12.0f}")
        if "ours_peak_gpu_allocated_mb" in figures:
            print(f"{'peak GPU allocated MB':<{w}} {figures['ours_peak_gpu_allocated_mb']:>12.0f} "
                  f"{figures['diffusers_peak_gpu_allocated_mb']:>12.0f}")
    print(f"{'UNet ms / step':<{w}} {figures['unet_ms_per_step']:>12.2f}")
    print(f"{'loop outside UNet ms/step':<{w}} {figures['outside_unet_ms_per_step']:>12.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
