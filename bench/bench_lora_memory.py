"""What a LoRA set costs in memory, against the size of its files (no generation, only applying).

    python bench/bench_lora_memory.py                        # full SD 1.5 architecture, rank-64 fp16 files
    python bench/bench_lora_memory.py --model /path/to/sd15-random --file-dtype float32

The model is the full SD 1.5 architecture with random weights (bench/sd15_random.py; give
``--model`` to reuse one already built). Each LoRA is a random rank-``--rank`` file on the UNet's
and text encoder's attention projections, in kohya's layout and ``--file-dtype`` (fp16 is what
most downloads are); a LoHa file of about the same size is applied too. Printed per step: the
process's resident memory growth over the model alone, the tensors the LoRA layers hold, and
the files' size; with the load average, as other work on the machine moves resident memory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))


def _rss() -> int:
    import psutil

    gc.collect()
    try:  # hand freed heap pages back, so the figure is what is held, not what malloc keeps around
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return int(psutil.Process(os.getpid()).memory_info().rss)


def _held(modules: list) -> int:  # type: ignore[type-arg]
    """Bytes of the LoRA layers' own tensors (peft's lora_A/lora_B; HeyIm's LoHa/LoKr factors)."""
    total = 0
    seen: set[int] = set()
    for module in modules:
        for name, param in module.named_parameters():
            if ".lora_" in name and id(param) not in seen:
                seen.add(id(param))
                total += param.numel() * param.element_size()
    return total


def write_files(parts, work: Path, rank: int, dtype_name: str) -> tuple[Path, Path, Path]:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    targets = {"unet": (parts.unet_model, ("to_q", "to_k", "to_v", "to_out.0"), "lora_unet_"),
               "te": (parts.text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"), "lora_te_")}
    out = []
    for seed, algo in ((1, "lora"), (2, "lora"), (3, "loha")):
        gen = torch.Generator().manual_seed(seed)
        state: dict[str, torch.Tensor] = {}
        for module, names, prefix in targets.values():
            for name, sub in module.named_modules():
                if not (isinstance(sub, torch.nn.Linear) and name.endswith(names)):
                    continue
                full = name if prefix == "lora_unet_" or name.startswith("text_model.") else f"text_model.{name}"
                key = prefix + full.replace(".", "_")

                def rnd(*shape: int, gen: torch.Generator = gen) -> torch.Tensor:
                    return (torch.randn(*shape, generator=gen) * 0.01).to(dtype)

                if algo == "lora":
                    state[f"{key}.lora_down.weight"] = rnd(rank, sub.in_features)
                    state[f"{key}.lora_up.weight"] = rnd(sub.out_features, rank)
                else:  # LoHa at half the rank: two factor pairs, about the LoRA's size
                    half = max(1, rank // 2)
                    for i in (1, 2):
                        state[f"{key}.hada_w{i}_a"] = rnd(sub.out_features, half)
                        state[f"{key}.hada_w{i}_b"] = rnd(half, sub.in_features)
                state[f"{key}.alpha"] = torch.tensor(float(rank), dtype=dtype)
        path = work / f"{algo}-{seed}.safetensors"
        save_file(state, str(path))
        out.append(path)
    return out[0], out[1], out[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="an SD 1.5-architecture model folder to reuse")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--passes", default="before,after",
                        help="which ways of holding LoRA layers to measure, in order: before (the model's dtype), "
                             "after (the file's dtype)")
    parser.add_argument("--file-dtype", default="float16", choices=("float16", "float32", "bfloat16"))
    args = parser.parse_args()

    from heyim_desktop.core.lora import LoraUse
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.torch_engine import load_torch_engine

    work = Path(tempfile.mkdtemp(prefix="heyim-bench-lora-mem-"))
    model = args.model
    if model is None:
        from sd15_random import build_sd15_random

        model = build_sd15_random(work / "sd15-random")
    engine = load_torch_engine(model, device="cpu")
    parts = engine.components
    a, b, loha = write_files(parts, work, args.rank, args.file_dtype)
    mb = {p: p.stat().st_size / 1e6 for p in (a, b, loha)}
    print(f"model: {model} (fp32, cpu); files: rank {args.rank}, {args.file_dtype}, "
          f"LoRA {mb[a]:.1f} MB each, LoHa {mb[loha]:.1f} MB")

    def apply(uses: tuple[LoraUse, ...]) -> None:
        parts.prepare_networks(GenerationRequest(prompt="a lighthouse", loras=uses))

    modules = [parts.unet_model, parts.text_encoder]
    import peft  # noqa: F401  (imported on the first LoRA otherwise: a one-off cost, not the set's)

    from heyim_desktop.core.lora_torch import NetworkPatcher

    for compact in [p.strip() == "after" for p in args.passes.split(",")]:
        # compact=False is how LoRA layers were held before (peft's copies in the model's dtype).
        parts._networks = NetworkPatcher(unet=parts.unet_model, vae=parts.vae, text_encoder=parts.text_encoder,
                                         tokenizer=parts.tokenizer, family=parts.capabilities.family, compact=compact)
        print(f"\n{'kept in the file dtype' if compact else 'model dtype (before)'}:")
        run(apply, modules, parts, mb, a, b, loha)
    engine.close()


def run(apply, modules, parts, mb, a, b, loha) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.lora import LoraUse

    base = _rss()
    print(f"{'step':34} {'files MB':>9} {'RSS +MB':>8} {'layers MB':>10} {'over files':>11}  load avg")
    for label, uses, files in (
        ("set A (one LoRA)", (LoraUse(str(a), 0.8),), mb[a]),
        ("set A+B (two LoRAs)", (LoraUse(str(a), 0.5), LoraUse(str(b), -0.4)), mb[a] + mb[b]),
        ("set A+B+LoHa", (LoraUse(str(a), 0.5), LoraUse(str(b), -0.4), LoraUse(str(loha), 0.7)),
         mb[a] + mb[b] + mb[loha]),
        ("none (unloaded)", (), 0.0),
    ):
        apply(uses)
        grown = (_rss() - base) / 1e6
        held = _held(modules) / 1e6
        lyco = parts._networks._lyco if parts._networks is not None else None
        if lyco is not None:
            held += lyco.held_bytes() / 1e6
        print(f"{label:34} {files:9.1f} {grown:+8.1f} {held:10.1f} {grown - files:+11.1f}  "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
