"""Peak memory of one generation per family: our engine (plain, HEYIM_OFFLOAD, VAE tiling) against
diffusers' bare pipeline (plain, VAE tiling), each run in its own child process.

    .venv/bin/python bench/bench_family_memory.py [--sizes 64,256] [--families sd3] [--steps 2] [--threads 1]

The tiny models have short position tables: Z-Image runs up to 64x64, SD 3.5 up to 192x192,
FLUX.2 [klein] larger; a size a tiny model cannot take is reported as failed (diffusers' own error).

Builds each tiny model (Z-Image, FLUX.2 [klein], SD 3.5: diffusers' fast-test shapes) once, then for
every family, image size and configuration starts a fresh Python process that imports torch and
diffusers, loads the model, generates one image and reports (Linux ``/proc/self/status``):

- ``base MB``: resident memory after the imports, before the model loads;
- ``load MB``: the peak while loading, less the base;
- ``gen MB``: the peak while generating (peak counter reset with ``/proc/self/clear_refs`` after
  loading), less the resident memory just before generating: what one image costs on top of the model;
- ``peak MB``: the process's whole peak resident set.

Configurations: ``bare`` (the diffusers pipeline called directly), ``bare+tiling`` (the same with
``vae.enable_tiling()``), ``ours`` (``load_engine`` + ``generate``), ``ours+offload`` (with
``HEYIM_OFFLOAD=on``: diffusers' model CPU offload through accelerate's hooks) and ``ours+tiling``
(the engine's VAE tiling threshold lowered to 0). The weights are tiny, so the figures show the
engine's overhead against the bare pipeline and how the memory options behave, not what a full-size
model needs (bench/family_memory_table.py computes that from parameter counts). On the CPU offload
keeps the parts where they are, so it can only add its hooks' cost; it saves memory on a GPU/MPS.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIGS = ("bare", "bare+tiling", "ours", "ours+offload", "ours+tiling")


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # resets VmHWM to the current resident set (Linux 4.0+)


def _bare_pipeline(folder: Path, **load: Any) -> tuple[Any, Any]:
    """diffusers' own pipeline for a family folder, loaded as the engine loads it (``load``: more
    ``from_pretrained`` arguments, such as ``torch_dtype``)."""
    import diffusers

    from heyim_desktop.core.families import read_family_index

    found = read_family_index(folder)
    assert found is not None
    family, index = found
    cls = getattr(diffusers, family.pipeline)
    expected, _optional = cls._get_signature_keys(cls)
    parts = {k: None for k in expected if index.get(k) in (None, [None, None])}
    pipe = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, **parts, **load)
    pipe.set_progress_bar_config(disable=True)
    return pipe, family


def bare_kwargs(pipe: Any, family: Any, size: int, steps: int, guidance: float) -> dict[str, Any]:
    """The arguments of a bare pipeline call that match the engine's request (output as floats)."""
    from heyim_desktop.core.families.engine import flux2_text_layers

    kwargs: dict[str, Any] = dict(prompt="a red fox in the forest", height=size, width=size,
                                  num_inference_steps=steps, guidance_scale=guidance, output_type="np")
    if family.negative_prompt:
        kwargs["negative_prompt"] = None
    if family.key == "flux2":
        kwargs["text_encoder_out_layers"] = flux2_text_layers(pipe.text_encoder.config.num_hidden_layers)
    return kwargs


def child(config: str, folder: Path, size: int, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    import diffusers  # noqa: F401  (imported before the base reading, as the engine process has it)

    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    base = _status_kb("VmRSS")
    _reset_peak()
    if config.startswith("bare"):
        pipe, family = _bare_pipeline(folder)
        if config == "bare+tiling":
            pipe.vae.enable_tiling()
        kwargs = bare_kwargs(pipe, family, size, steps, 3.0)

        def run() -> None:
            pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1))
    else:
        from heyim_desktop.core.loading import load_engine
        from heyim_desktop.core.request import GenerationRequest

        engine: Any = load_engine(str(folder), device="cpu")
        if config == "ours+tiling":
            engine.tile_above_pixels = 0
        request = GenerationRequest("a red fox in the forest", steps=steps, guidance=3.0, seed=1,
                                    width=size, height=size, scheduler="Euler")

        def run() -> None:
            engine.generate(request, progress=lambda p: None)
    load_peak = _status_kb("VmHWM")
    before = _status_kb("VmRSS")
    _reset_peak()
    run()
    gen_peak = _status_kb("VmHWM")
    import resource

    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux: the lifetime peak
    offloaded = bool(getattr(locals().get("engine"), "offloaded", False))
    print(json.dumps({"base": base, "load": load_peak - base, "gen": gen_peak - before, "peak": whole,
                      "offloaded": offloaded}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--families", default="", help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "FOLDER", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, folder, size = args.child
        child(config, Path(folder), int(size), args.steps, args.threads)
        return

    from heyim_desktop.core.families.tiny import TINY_FAMILIES, build_tiny_model

    with open("/proc/loadavg", encoding="ascii") as fh:
        print(f"loadavg before: {fh.read().strip()}")
    root = Path(tempfile.mkdtemp(prefix="bench-family-memory-"))
    chosen = [f for f in args.families.split(",") if f] or list(TINY_FAMILIES)
    folders = {family: build_tiny_model(family, root / family) for family in chosen}
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'family':8} {'size':>5} {'config':13} {'base MB':>8} {'load MB':>8} {'gen MB':>8} {'peak MB':>8}"
          f" {'peak/bare':>9}")
    for family, folder in folders.items():
        for size in sizes:
            bare_peak = None
            for config in CONFIGS:
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                           HEYIM_OFFLOAD="on" if config == "ours+offload" else "off")
                out = subprocess.run(
                    [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
                     "--child", config, str(folder), str(size)],
                    env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    print(f"{family:8} {size:5} {config:13} failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if config == "bare":
                    bare_peak = r["peak"]
                ratio = f"{r['peak'] / bare_peak:9.3f}" if bare_peak else f"{'-':>9}"
                note = "" if config != "ours+offload" or r["offloaded"] else "  (offload not on!)"
                print(f"{family:8} {size:5} {config:13} {r['base'] / 1024:8.1f} {r['load'] / 1024:8.1f}"
                      f" {r['gen'] / 1024:8.1f} {r['peak'] / 1024:8.1f} {ratio}{note}", flush=True)
    with open("/proc/loadavg", encoding="ascii") as fh:
        print(f"loadavg after: {fh.read().strip()}")


if __name__ == "__main__":
    main()
