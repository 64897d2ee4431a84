"""Seconds per image and peak memory of each family's FULL architecture (random bf16 weights) on this
machine: HeyIm's engine against diffusers' pipeline alone, interleaved in the same run.

    .venv/bin/python bench/bench_families.py --cache /path/with/60GB [--families sd3,flux2,zimage]
        [--size 256] [--steps 2] [--rounds 2] [--threads 2] [--depth N] [--yes]
    .venv/bin/python bench/bench_families.py --cache DIR --working-set [--size 1024]

Builds (once, cached under ``--cache``) Z-Image Turbo, FLUX.2 [klein] 4B and SD 3.5 Medium at their
released shapes (bench/family_arch.py; 20, 16 and 16 GB of bf16 weights), then for each family runs,
in fresh processes and alternating, ``ours`` (``load_engine(precision="bf16")`` + ``generate``: the
engine the window, CLI and API drive, with ``memory="full"`` as the bare pipeline keeps every part) and
``bare`` (diffusers' pipeline ``from_pretrained`` in bf16, called with the same seed and settings,
``output_type="np"``); ``--configs`` adds ``ours+low`` (``memory="low"``: text encoders and transformer
loaded in turn; its row also times an image with a new prompt, which loads them again). Each process loads the model, runs one
warm-up image and one timed image, and reports (Linux ``/proc/self/status``):

- ``load s``: the load's wall time; ``s/img``: the timed image's;
- ``resident GB``: resident memory after the timed image, less the process's after its imports (the
  weights are memory-mapped; every page of them is read once after the load, outside the timings);
- ``gen GB``: the peak while generating, less the resident memory just before (what one image costs);
- ``peak GB``: the process's whole peak resident set.

Guidance is each family's recommended (Z-Image Turbo 0: one pass a step; FLUX.2 [klein] distilled:
one pass; SD 3.5 4.5: two passes), the steps ``--steps`` (the recommended 9, 4 and 40 cost that many
times one step). ``--working-set`` instead measures what one image costs at ``--size`` (1024) with
a two-layer model of full width (the transformer keeps one layer's activations at a time, so the
working set is the full model's; the VAE and the text encoders' widths are the real ones), for the
"what fits" table: bench/family_memory_table.py --measured.

``--device cuda`` runs both on a GPU (``--size 1024 --steps 0``: the recommended steps) and adds the GPU's
memory (weights, and what one image adds at its peak, from torch.cuda's counters). The machine must
be otherwise idle: on the CPU the Z-Image processes take about 21 GB. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_family_memory import _bare_pipeline, _reset_peak, _status_kb, bare_kwargs  # noqa: E402

FAMILIES = ("sd3", "flux2", "zimage")
#: Disk (GB) each full model takes; the cache needs their sum.
DISK_GB = {"zimage": 20.6, "flux2": 16.0, "sd3": 16.3}


def child(config: str, folder: Path, size: int, steps: int, threads: int, warmup: bool, device: str = "cpu") -> None:
    import torch

    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    import diffusers  # noqa: F401  (imported before the base reading, as the engine process has it)

    from heyim_desktop.core.families import read_family_index
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    found = read_family_index(folder)
    assert found is not None
    family = found[0]
    steps = steps or family.recommended_steps
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    if config == "bare":
        pipe, _family = _bare_pipeline(folder, torch_dtype=torch.bfloat16)
        pipe.to(device)
        kwargs = bare_kwargs(pipe, family, size, steps, family.recommended_guidance)

        def run() -> None:
            pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1))
    else:
        from heyim_desktop.core.loading import load_engine
        from heyim_desktop.core.request import GenerationRequest

        pipe: Any = None
        memory = "low" if config == "ours+low" else "full"  # "full": the bare pipeline's configuration
        engine: Any = load_engine(str(folder), device=device, precision="bf16", memory=memory)
        request = GenerationRequest("a red fox in the forest", steps=steps, guidance=family.recommended_guidance,
                                    seed=1, width=size, height=size, scheduler=family.sampler)

        def run() -> None:
            engine.generate(request, progress=lambda p: None)

        def new_prompt() -> None:
            engine.generate(request.replace(prompt="a photo of a cat in the city"), progress=lambda p: None)
    load_s = time.perf_counter() - t0
    if config != "ours+low" and not cuda:  # page the weights in, outside the timing (low memory: none loaded yet)
        _touch((engine.pipe if config != "bare" else pipe).components)
    if warmup:
        run()
    hwm = _status_kb("VmHWM")  # the load's and the warm-up's peak
    before = _status_kb("VmRSS")
    gpu_before = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _reset_peak()
    t0 = time.perf_counter()
    run()
    gen_s = time.perf_counter() - t0
    gpu = {"gpu_peak_gen": torch.cuda.max_memory_allocated() - gpu_before, "gpu_weights": gpu_before} if cuda else {}
    gen_hwm = _status_kb("VmHWM")
    resident = _status_kb("VmRSS") - base
    new_s = 0.0
    if config == "ours+low":  # a new prompt: the text encoders load, then the transformer again
        t0 = time.perf_counter()
        new_prompt()
        new_s = time.perf_counter() - t0
    # ru_maxrss is no use here: a child starts with its parent's
    print(json.dumps({"load_s": load_s, "gen_s": gen_s, "resident": resident, "gen": gen_hwm - before,
                      "peak": max(hwm, gen_hwm, _status_kb("VmHWM")), "new_s": new_s, **gpu}))


def _touch(components: dict[str, Any]) -> None:
    """Read one value of every memory page of every weight, so it is resident before an image runs."""
    import torch

    with torch.no_grad():
        for module in components.values():
            for param in getattr(module, "parameters", lambda: ())():
                flat = param.detach().reshape(-1)
                float(flat[:: max(1, 4096 // flat.element_size())].float().sum())


def _run_child(config: str, folder: Path, args: argparse.Namespace, size: int, warmup: bool) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HEYIM_OFFLOAD="off", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--cache", str(args.cache), "--steps", str(args.steps), "--device", args.device,
           "--threads", str(args.threads), "--child", config, str(folder), str(size), str(int(warmup))]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as fh:
        return fh.read().strip()


def _preflight(args: argparse.Namespace, families: list[str]) -> None:
    need = sum(DISK_GB[f] for f in families) if not args.depth else 4.0 * len(families)
    args.cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.cache).free / 1e9
    with open("/proc/meminfo", encoding="ascii") as fh:
        mem = {line.split(":")[0]: int(line.split()[1]) for line in fh}
    avail = mem["MemAvailable"] / 1e6
    print(f"cache {args.cache}: {free:.0f} GB free (up to {need:.0f} GB needed unless built); "
          f"{avail:.1f} GB of memory available; loadavg {_loadavg()}")
    if not args.yes:
        raise SystemExit("This builds and runs multi-GB models for tens of minutes; add --yes to go ahead.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--size", type=int, default=0, help="default 256; 1024 with --working-set")
    parser.add_argument("--steps", type=int, default=2, help="0: each family's recommended (9, 4, 40)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (on a GPU: --size 1024 --steps 0)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--depth", type=int, default=0, help="cut each layered part to N layers (0: full)")
    parser.add_argument("--working-set", action="store_true")
    parser.add_argument("--configs", default="ours,bare", help="of ours, bare, ours+low (default ours,bare)")
    parser.add_argument("--yes", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "FOLDER", "SIZE", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, folder, size, warmup = args.child
        child(config, Path(folder), int(size), args.steps, args.threads, warmup == "1", args.device)
        return

    import family_arch

    families = [f for f in args.families.split(",") if f]
    if args.working_set:
        args.depth = args.depth or 2
        args.steps = 1
    size = args.size or (1024 if args.working_set else 256)
    _preflight(args, families)
    print(f"{args.device}, threads {args.threads}, {size}x{size}, {args.steps or 'recommended'} steps, bf16, "
          f"{'depth ' + str(args.depth) if args.depth else 'full depth'}")
    print(f"{'family':18} {'config':8} {'load s':>7} {'s/img':>8} {'resident GB':>11} {'gen GB':>7} {'peak GB':>8}")
    summary: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for family in families:
        t0 = time.perf_counter()
        folder = family_arch.build(family, args.cache, args.depth or None)
        built = time.perf_counter() - t0
        sizes = family_arch.folder_bytes(folder)
        print(f"# {family_arch.LABELS[family]}: {folder.name} ({built:.0f} s to build or find), "
              + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items()), flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": [], "ours+low": []}
        configs = ("ours",) if args.working_set else tuple(c for c in args.configs.split(",") if c)
        for _round in range(1 if args.working_set else args.rounds):
            for config in configs:
                r = _run_child(config, folder, args, size, warmup=not args.working_set)
                if "error" in r:
                    print(f"{family_arch.LABELS[family]:18} {config:8} failed: {r['error']}", flush=True)
                    continue
                runs[config].append(r)
                extra = f"  new prompt {r['new_s']:.2f} s" if r.get("new_s") else ""
                if "gpu_peak_gen" in r:
                    extra += f"  GPU weights {r['gpu_weights'] / 1e9:.2f} GB, image +{r['gpu_peak_gen'] / 1e9:.2f} GB"
                print(f"{family_arch.LABELS[family]:18} {config:8} {r['load_s']:7.1f} {r['gen_s']:8.2f}"
                      f" {r['resident'] / 1e6:11.2f} {r['gen'] / 1e6:7.2f} {r['peak'] / 1e6:8.2f}{extra}", flush=True)
        summary[family] = runs
    if not args.working_set:
        print("\nmedians, ours / bare (and ours in low memory / bare):")
        for family, runs in summary.items():
            if runs["ours+low"] and runs["bare"]:
                lo = {k: statistics.median(r[k] for r in runs["ours+low"]) for k in ("gen_s", "peak")}
                b = {k: statistics.median(r[k] for r in runs["bare"]) for k in ("gen_s", "peak")}
                print(f"{family_arch.LABELS[family]:18} low memory: peak {lo['peak'] / 1e6:.2f} vs {b['peak'] / 1e6:.2f} GB"
                      f" ({lo['peak'] / b['peak']:.3f}x); s/img {lo['gen_s']:.2f} vs {b['gen_s']:.2f}")
            if not runs["ours"] or not runs["bare"]:
                continue
            o = {k: statistics.median(r[k] for r in runs["ours"]) for k in ("gen_s", "peak")}
            b = {k: statistics.median(r[k] for r in runs["bare"]) for k in ("gen_s", "peak")}
            print(f"{family_arch.LABELS[family]:18} s/img {o['gen_s']:.2f} vs {b['gen_s']:.2f} "
                  f"({o['gen_s'] / b['gen_s']:.3f}x); peak {o['peak'] / 1e6:.2f} vs {b['peak'] / 1e6:.2f} GB "
                  f"({o['peak'] / b['peak']:.3f}x)")
    print(f"loadavg after: {_loadavg()}")


if __name__ == "__main__":
    main()
