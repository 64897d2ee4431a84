#!/usr/bin/env python3
"""What ``--quantize 8|6|4`` costs in output, measured without a Mac.

    python bench/palette_bound.py [--bits 8 6 4] [--steps 4] [--size 64] [--check-decompress]

The tiny random model's UNet is converted (Neural Engine layout, fp16, macOS 15 target so all
three depths palettize with the converter's own settings), palettized as ``convert --quantize``
does, and its weights are read back from each package (lookup tables and indices) onto the torch
UNet (``core/coreml/palette_check.py``). Printed per depth: the weights' max relative error, the
noise prediction's max difference relative to its largest value, and the decoded image's max abs
difference (floats in [0, 1]) of a short torch generation, each against the fp16 weights; then the
same with every lookup table shuffled, the control a broken palettization would give.
Core ML's own arithmetic is not in these figures (it needs macOS: see the ``macos`` test).
``--check-decompress`` also checks the expansion against coremltools' ``decompress_weights``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--check-decompress", action="store_true")
    args = parser.parse_args()

    import numpy as np

    from heyim_desktop.core.coreml import compression, palette_check
    from heyim_desktop.core.coreml import modules as M  # noqa: N812
    from heyim_desktop.core.coreml.convert import _convert, _quiet_coremltools
    from heyim_desktop.core.demo_model import build_demo_model
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.core.torch_engine import load_torch_engine

    quiet_third_party()
    _quiet_coremltools()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = load_torch_engine(build_demo_model(root / "tiny"), device="cpu")
        comp = engine.components
        unet = comp.unet_model
        request = GenerationRequest(prompt="a red fox", steps=args.steps, seed=3, width=args.size, height=args.size)
        f16 = np.float16
        lat = args.size // comp.vae_scale_factor
        cross = int(unet.config.cross_attention_dim)
        inputs = [("sample", (2, 4, lat, lat), f16), ("timestep", (2,), f16), ("encoder_hidden_states", (2, cross, 1, 77), f16)]
        t0 = time.perf_counter()
        model = _convert(M.UnetModule(M.unet_for(unet, "split_einsum")), inputs, [("noise_pred", np.float32)], macos=15)
        fp16_path = root / "Unet.mlpackage"
        model.save(str(fp16_path))
        print(f"UNet: {sum(p.numel() for p in unet.parameters())} parameters, converted in {time.perf_counter() - t0:.1f} s, "
              f"fp16 package {compression.human_bytes(compression.package_bytes(fp16_path))}")
        print(f"generation: {args.size}x{args.size}, {args.steps} steps, torch fp32 on the CPU")
        print(f"{'bits':>4} {'package':>9} {'weights rel':>12} {'noise rel':>10} {'image abs':>10} | shuffled LUT: {'noise rel':>9} {'image abs':>9}")
        for bits in args.bits:
            t0 = time.perf_counter()
            small = compression.palettize(model, bits)
            path = root / f"Unet{bits}.mlpackage"
            small.save(str(path))
            palettes = palette_check.palettized_weights(path)
            if args.check_decompress:
                import coremltools as ct
                import coremltools.optimize.coreml as cto

                dense = cto.get_weights_metadata(cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)), 0)
                worst = max(float(np.abs(palette_check.expand_lut(*palettes[name]).astype(np.float32)
                                         - np.asarray(dense[name + "_palettized"].val, np.float32)).max()) for name in palettes)
                print(f"  {bits}-bit: expansion vs coremltools' decompress_weights, max abs {worst:.3g} over {len(palettes)} weights")
            good = palette_check.compare(comp, fp16_path, palettes, request)
            bad = palette_check.compare(comp, fp16_path, palette_check.shuffled(palettes), request)
            size = compression.human_bytes(compression.package_bytes(path))
            print(f"{bits:>4} {size:>9} {good['weights']:>12.4f} {good['noise']:>10.4f} {good['image']:>10.4f} | "
                  f"{'':>14}{bad['noise']:>9.3f} {bad['image']:>9.3f}   ({len(palettes)} weights, {time.perf_counter() - t0:.0f} s)")
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
