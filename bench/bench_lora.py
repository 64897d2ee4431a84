"""What a LoRA set costs a job: the first job with a new set, later jobs with it, a job after
switching sets, and a job after dropping LoRAs, against the same jobs without LoRA.

    python bench/bench_lora.py                       # full SD 1.5 architecture, 256x256, 2 steps, CPU
    python bench/bench_lora.py --size 512 --steps 4 --rank 128 --device cuda

The model is the full SD 1.5 architecture built in memory from resources/model_configs/sd1
with random weights (cost depends on the architecture, not the values); each LoRA is a random
rank-``--rank`` LoRA in the diffusers/PEFT layout on the UNet's and text encoder's attention
projections, written to a temporary .safetensors file. Printed: seconds per job, the extra
over the median no-LoRA job, the LoRA files' size and the process's resident memory growth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
CONFIGS = HERE.parent / "src" / "heyim_desktop" / "resources" / "model_configs" / "sd1"


def _rss() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


def build_engine(device: str):  # type: ignore[no-untyped-def]
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from heyim_desktop.core.demo_model import write_tokenizer
    from heyim_desktop.core.engine import PipelineEngine
    from heyim_desktop.core.torch_engine import TorchComponents

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae" / "config.json").read_text()))
    te_config = CLIPTextConfig.from_json_file(str(CONFIGS / "text_encoder" / "config.json"))
    text_encoder = CLIPTextModel(te_config)
    tok_dir = Path(tempfile.mkdtemp(prefix="heyim-bench-tok-"))
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = json.loads((CONFIGS / "scheduler" / "scheduler_config.json").read_text())
    dev = torch.device(device)
    parts = TorchComponents.from_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                         scheduler_config=scheduler, device=dev, dtype=torch.float32,
                                         source_name="sd15-random")
    return PipelineEngine(parts, name=f"torch-{dev.type}", model_name="sd15-random", default_size=(512, 512)), parts


def write_random_lora(parts, dest: Path, rank: int, seed: int, dtype_name: str = "float32") -> Path:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix, module, targets in (("unet", parts.unet_model, ("to_q", "to_k", "to_v", "to_out.0")),
                                    ("text_encoder", parts.text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"))):
        for name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear) and name.endswith(targets):
                state[f"{prefix}.{name}.lora_A.weight"] = torch.randn(rank, sub.in_features, generator=gen) * 0.01
                state[f"{prefix}.{name}.lora_B.weight"] = torch.randn(sub.out_features, rank, generator=gen) * 0.01
    dtype = getattr(torch, dtype_name)
    save_file({k: v.to(dtype) for k, v in state.items()}, str(dest))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--model", type=Path, default=None,
                        help="an SD 1.5-architecture model folder to load instead of building one in memory")
    parser.add_argument("--file-dtype", default="float32", choices=("float32", "float16"),
                        help="the LoRA files' dtype (most downloads are fp16)")
    args = parser.parse_args()

    import torch

    from heyim_desktop.core.lora import LoraUse
    from heyim_desktop.core.request import GenerationRequest

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.model is not None:
        from heyim_desktop.core.torch_engine import load_torch_engine

        engine = load_torch_engine(args.model, device=args.device)
        parts = engine.components
    else:
        engine, parts = build_engine(args.device)
    print(f"model: full SD 1.5 architecture, random weights, ready in {time.perf_counter() - t0:.1f} s "
          f"({args.device}, {torch.get_num_threads()} threads)")
    work = Path(tempfile.mkdtemp(prefix="heyim-bench-lora-"))
    a = write_random_lora(parts, work / "set_a.safetensors", args.rank, 1, args.file_dtype)
    b = write_random_lora(parts, work / "set_b.safetensors", args.rank, 2, args.file_dtype)
    file_mb = a.stat().st_size / 1e6
    print(f"LoRA: rank {args.rank}, UNet + text encoder attention, {file_mb:.1f} MB per file")

    def job(loras: tuple[LoraUse, ...]) -> float:
        req = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=args.steps,
                                guidance=7.0, seed=3, width=args.size, height=args.size, scheduler="Euler a",
                                loras=loras)
        start = time.perf_counter()
        engine.generate(req)
        return time.perf_counter() - start

    set_a = (LoraUse(str(a), 0.8),)
    set_b = (LoraUse(str(a), 0.5), LoraUse(str(b), -0.4))
    print(f"\n{args.size}x{args.size}, {args.steps} steps, Euler a, guidance 7\n", flush=True)
    job(())  # warm-up (first-call allocations, thread pools)
    plain = [job(()) for _ in range(2)]
    base = statistics.median(plain)
    print(f"{'job':38} {'seconds':>8} {'vs no LoRA':>11}  load avg (1, 5, 15 min)")

    def row(label: str, t: float) -> None:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{label:38} {t:8.2f} {t - base:+10.2f}s  {load}", flush=True)

    for t in plain:
        row("no LoRA", t)
    rss0 = _rss()
    row("set A, first job (load + apply)", job(set_a))
    rss_a = _rss()
    for _ in range(2):
        row("set A, later job", job(set_a))
    row("switch to set B (A 0.5 + B -0.4)", job(set_b))
    rss_b = _rss()
    row("set B, later job", job(set_b))
    row("no LoRA again (unload)", job(()))
    row("no LoRA, later job", job(()))
    print(f"\nresident memory: +{(rss_a - rss0) / 1e6:.0f} MB with set A ({file_mb:.0f} MB file), "
          f"+{(rss_b - rss0) / 1e6:.0f} MB with set B ({2 * file_mb:.0f} MB of files)")


if __name__ == "__main__":
    main()
