"""Tiled upscaling against spandrel's own untiled call: seconds and peak memory, side by side.

    python bench/bench_upscale.py                              # 512 -> 2048 (x4), tiles 256 and 512, CPU
    python bench/bench_upscale.py --blocks 23 --device cuda    # Real-ESRGAN x4plus size, on a GPU
    python bench/bench_upscale.py --size 256 --blocks 6        # quicker

The model is the Real-ESRGAN architecture (spandrel's RRDBNet/ESRGAN class) with random weights,
``--blocks 23`` as RealESRGAN_x4plus, ``--blocks 6`` (default) as RealESRGAN_x4plus_anime_6B;
the arithmetic per pixel does not depend on the weights. Each configuration runs in its own
child process (so peak memory is its own): HeyIm's tiled path (``upscale_tensor``, overlap 32)
for each tile size, and spandrel's descriptor called on the whole image ("untiled", skipped
with --no-untiled where it does not fit). Reported: wall seconds of the upscale (model loaded),
peak RSS of the process, peak CUDA memory allocated, and each tiled output's max/mean
difference from the untiled one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def _build_model(path: Path, blocks: int) -> None:
    import torch
    from safetensors.torch import save_file

    from heyim_desktop.core.upscale import import_spandrel

    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=blocks, scale=4)
    for p in net.parameters():  # small weights keep activations in range through 23 blocks
        p.data.mul_(0.2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from heyim_desktop.core.upscale import load_upscaler, upscale_tensor

    torch.set_num_threads(args.threads)
    model = load_upscaler(args.model_file, device=args.device)
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, args.size, args.size, generator=gen)
    base_rss = _peak_rss_mb()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tiles = 0
    if args.config == "untiled":
        with torch.inference_mode():
            out = model.descriptor(image.to(model.device, getattr(model.descriptor, "dtype", torch.float32)))
        out = out.float().cpu()
    else:
        counted: list[int] = []
        out = upscale_tensor(model, image, model.scale, tile=int(args.config), overlap=32,
                             progress=lambda p: counted.append(p.step))
        tiles = len(counted)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    np.save(args.out_file, out[0].numpy().astype(np.float16))
    print(json.dumps({
        "config": args.config, "seconds": round(seconds, 2), "tiles": tiles,
        "peak_rss_mb": round(_peak_rss_mb()), "rss_before_mb": round(base_rss),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20) if args.device == "cuda" else None,
        "out": list(out.shape[-2:]),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="input side in pixels (output is 4x)")
    ap.add_argument("--blocks", type=int, default=6, help="RRDB blocks: 6 (anime_6B) or 23 (x4plus)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-untiled", action="store_true", help="skip spandrel's whole-image call")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", dest="config", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.config is not None:
        child(args)
        return
    import numpy as np

    work = Path(args.workdir or tempfile.mkdtemp(prefix="heyim-bench-upscale-"))
    work.mkdir(parents=True, exist_ok=True)
    model_file = work / f"esrgan_x4_{args.blocks}b.safetensors"
    if not model_file.is_file():
        _build_model(model_file, args.blocks)
    configs = ([] if args.no_untiled else ["untiled"]) + [str(t) for t in args.tiles]
    print(f"{args.size}x{args.size} -> {4 * args.size}x{4 * args.size}, RRDBNet x4 with {args.blocks} blocks, "
          f"device {args.device}, {args.threads} threads", flush=True)
    rows = []
    for config in configs:
        out_file = work / f"out-{config}.npy"
        cmd = [sys.executable, __file__, "--child", config, "--model-file", str(model_file), "--out-file", str(out_file),
               "--size", str(args.size), "--device", args.device, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            row = {"config": config, "error": f"exit {proc.returncode}: {tail}"}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref_file = work / "out-untiled.npy"
    if ref_file.is_file():
        ref = np.load(ref_file).astype(np.float32)
        for row in rows:
            if row["config"] != "untiled" and "error" not in row:
                diff = np.abs(np.load(work / f"out-{row['config']}.npy").astype(np.float32) - ref)
                row["max_diff_vs_untiled"] = float(diff.max())
                row["mean_diff_vs_untiled"] = float(diff.mean())
    print("\nconfig     seconds   peak RSS MB   CUDA peak MB   tiles   max|mean diff vs untiled")
    for row in rows:
        if "error" in row:
            print(f"{row['config']:<10} {row['error']}")
            continue
        diff = (f"{row['max_diff_vs_untiled']:.2e} | {row['mean_diff_vs_untiled']:.2e}"
                if "max_diff_vs_untiled" in row else "-")
        print(f"{row['config']:<10} {row['seconds']:>7}   {row['peak_rss_mb']:>11}   {str(row['cuda_peak_mb'] or '-'):>12}"
              f"   {row['tiles']:>5}   {diff}")


if __name__ == "__main__":
    main()
