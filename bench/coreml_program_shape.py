#!/usr/bin/env python3
"""Shape figures of converted UNet programs: HeyIm's Neural Engine layout against the old one.

    python bench/coreml_program_shape.py [--sizes 256 1024]

Converts the tiny SD UNet (the demo model's) and the tiny SDXL UNet (diffusers' SDXL test
config) with coremltools, fp16 compute, at each size, in three layouts:

* ``ane``: the converter's ``split_einsum`` today (core/coreml/ane.py);
* ``old-split``: what the converter wrote as ``split_einsum`` before (diffusers' UNet with a
  per-head einsum processor, (B, S, C) tensors);
* ``original``: diffusers' UNet with plain attention.

and prints, per program: op count, ``linear``/``einsum``/``transpose`` counts, distinct rank-3
tensors and the largest intermediate tensor. Runs anywhere coremltools converts (Linux too);
nothing is executed, so sizes up to 1024x1024 are cheap. Random weights: figures are shapes,
not speed (bench_coreml.py measures speed on a Mac).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TINY_SDXL_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=1,
)


def figures(unet, layout: str, size: int, xl: bool):  # type: ignore[no-untyped-def]
    import copy

    import numpy as np

    from heyim_desktop.core.coreml import modules as M  # noqa: N812 - the torch modules, short in long expressions
    from heyim_desktop.core.coreml.convert import _convert
    from heyim_desktop.core.coreml.program import program_figures

    u = copy.deepcopy(unet)
    if layout == "ane":
        u = M.unet_for(u, "split_einsum")
    else:
        M.use_attention(u, "split_einsum" if layout == "old-split" else "original")
    lat = size // 8
    f16 = np.float16
    inputs = [("sample", (2, 4, lat, lat), f16), ("timestep", (2,), f16),
              ("encoder_hidden_states", (2, int(unet.config.cross_attention_dim), 1, 77), f16)]
    module: Any = M.UnetModule(u)
    if xl:
        inputs += [("time_ids", (2, 6), f16), ("text_embeds", (2, 32), f16)]
        module = M.UnetXLModule(u)
    model = _convert(module, inputs, [("noise_pred", np.float32)])
    return program_figures(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--layouts", nargs="+", default=["ane", "old-split", "original"])
    args = parser.parse_args()
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import torch
    from diffusers import UNet2DConditionModel

    from heyim_desktop.core.demo_model import build_demo_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    with tempfile.TemporaryDirectory() as tmp:
        sd = UNet2DConditionModel.from_pretrained(build_demo_model(Path(tmp) / "tiny") / "unet").eval()
    torch.manual_seed(0)
    xl = UNet2DConditionModel(**TINY_SDXL_UNET).eval()
    for name, unet, is_xl in (("tiny SD", sd, False), ("tiny SDXL", xl, True)):
        for size in args.sizes:
            for layout in args.layouts:
                f = figures(unet, layout, size, is_xl)
                print(f"{name} {size}x{size} {layout}: {f.describe()}; noise_pred {f.output_dtypes.get('noise_pred')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
