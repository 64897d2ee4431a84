"""What palettization (``convert --quantize 8|6|4``) costs in output, within a stated bound of fp16.

Core ML cannot predict off macOS, so here the palettized package's weights are read back (each
``constexpr_lut_to_dense``'s lookup table and indices, from the package's weight file) onto the
torch UNet it was converted from, and the torch UNet's noise prediction and the decoded image of a
short generation are compared with the fp16 weights' (``core/coreml/palette_check.py``). This is
the weights' error only; the ``macos`` test at the end measures the same with Core ML predicting.

To stay fast the UNet is a micro one (16/32 channels, 25k parameters in its 3x3 and 1x1 convs)
inside the tiny model's text encoder, VAE and scheduler; ``bench/palette_bound.py`` prints the
same figures for the tiny model's full UNet. The package targets macOS 15 so all three depths
palettize from one conversion with the converter's own settings (``compression.palettize``).
A shuffled lookup table (a broken palettization) must break every bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.coreml import compression, palette_check
from heyim_desktop.core.request import GenerationRequest

MICRO_SD_UNET: dict[str, Any] = dict(
    block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
)
REQUEST = GenerationRequest(prompt="a red fox", steps=3, seed=3, width=64, height=64)
#: Bounds per bit depth: the noise prediction's max difference relative to its largest value,
#: and the decoded image's max abs difference (floats in [0, 1]), against the fp16 weights.
#: Measured on the micro UNet: 8 bits 0.0076 / 0.0032, 6 bits 0.033 / 0.011, 4 bits 0.127 / 0.073;
#: with every table shuffled, 4 bits gives 1.03 / 0.30.
BOUNDS = {8: (0.015, 0.01), 6: (0.05, 0.025), 4: (0.2, 0.15)}
#: The same for the tiny model's full UNet, where ``bench/palette_bound.py`` measured (torch,
#: 64x64, 4 steps) 8 bits 0.0133 / 0.0029, 6 bits 0.047 / 0.013, 4 bits 0.186 / 0.044; about twice
#: that for the Mac test, whose Core ML fp16 arithmetic comes on top (not yet run on a Mac).
MAC_BOUNDS = {8: (0.03, 0.02), 6: (0.1, 0.05), 4: (0.35, 0.15)}


@pytest.fixture(scope="module")
def micro(tiny_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Any]:
    """Torch components with the micro UNet, its fp16 package (macOS 15) and the converted model."""
    import torch
    from diffusers import UNet2DConditionModel

    from heyim_desktop.core.coreml import modules as M  # noqa: N812
    from heyim_desktop.core.coreml.convert import _convert, _quiet_coremltools
    from heyim_desktop.core.torch_engine import TorchComponents

    _quiet_coremltools()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MICRO_SD_UNET).eval()
    tiny = tiny_engine.components
    comp = TorchComponents.from_modules(
        unet=unet, vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer,
        scheduler_config=tiny.scheduler_config, device=torch.device("cpu"), dtype=torch.float32)
    lat = REQUEST.width // comp.vae_scale_factor
    f16 = np.float16
    inputs = [("sample", (2, 4, lat, lat), f16), ("timestep", (2,), f16), ("encoder_hidden_states", (2, 32, 1, 77), f16)]
    model = _convert(M.UnetModule(M.unet_for(unet, "split_einsum")), inputs, [("noise_pred", np.float32)], macos=15)
    path = tmp_path_factory.mktemp("palette") / "Unet.mlpackage"
    model.save(str(path))
    return comp, path, model


def test_expand_lut_per_tensor_and_grouped() -> None:
    indices = np.array([[0, 1], [1, 0], [0, 0], [1, 1]], np.uint8)
    per_tensor = np.array([-1.0, 2.0], np.float16).reshape(1, 1, 2, 1)
    assert palette_check.expand_lut(per_tensor, indices).tolist() == [[-1, 2], [2, -1], [-1, -1], [2, 2]]
    grouped = np.array([[-1.0, 2.0], [5.0, 7.0]], np.float16).reshape(2, 1, 2, 1)  # rows 0-1 and 2-3
    assert palette_check.expand_lut(grouped, indices).tolist() == [[-1, 2], [2, -1], [5, 5], [7, 7]]
    with pytest.raises(ValueError, match="lookup table"):
        palette_check.expand_lut(per_tensor[..., 0], indices)


@pytest.mark.slow  # the micro UNet's conversion once for the module, then k-means per depth (2-8 s each on 2 cores)
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_palettized_prediction_stays_within_bound_of_fp16(micro: tuple[Any, Path, Any], tmp_path: Path, bits: int) -> None:
    comp, fp16_path, model = micro
    out = tmp_path / f"Unet{bits}.mlpackage"
    compression.palettize(model, bits).save(str(out))
    palettes = palette_check.palettized_weights(out)
    mapped = palette_check.torch_weights(comp.unet_model, fp16_path, palettes)
    sizes = {k: v.numel() for k, v in comp.unet_model.state_dict().items() if v.numel() >= compression.WEIGHT_THRESHOLD}
    # every palette is found again on a large weight, and they hold most of the large weights' values
    assert set(mapped) <= set(sizes) and len(mapped) >= 10
    assert sum(sizes[k] for k in mapped) >= 0.8 * sum(sizes.values()), sorted(set(sizes) - set(mapped))
    tables = {lut.shape[-2] for lut, _ in palettes.values()}
    assert tables == {2 ** bits} or (bits == 8 and tables <= {2 ** b for b in range(1, 9)})
    noise_bound, image_bound = BOUNDS[bits]
    good = palette_check.compare(comp, fp16_path, palettes, REQUEST)
    print(f"{bits}-bit: {good}")
    assert 0 < good["noise"] <= noise_bound and 0 < good["image"] <= image_bound, good
    bad = palette_check.compare(comp, fp16_path, palette_check.shuffled(palettes), REQUEST)
    assert bad["noise"] > 3 * noise_bound and bad["image"] > image_bound, bad


@pytest.mark.macos
@pytest.mark.slow  # three conversions of the tiny model and Core ML compiles
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_core_ml_palettized_prediction_within_bound(tiny_model: Path, coreml_model: Path, tmp_path: Path, bits: int) -> None:
    """On a Mac: the palettized conversion's UNet prediction and image, by Core ML itself,
    against the fp16 conversion's, within ``MAC_BOUNDS`` (the torch figures for this UNet, with
    room for Core ML's fp16 arithmetic)."""
    import coremltools as ct

    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.convert import convert_to_coreml
    from heyim_desktop.core.coreml.engine import load_coreml_engine

    small = convert_to_coreml(tiny_model, tmp_path / f"tiny-{bits}bit", quantize=bits)
    rng = np.random.default_rng(0)
    spec = ct.models.MLModel(str(coreml_model / "Unet.mlpackage"), compute_units=ct.ComputeUnit.CPU_ONLY)
    feed = {i.name: rng.standard_normal(tuple(i.type.multiArrayType.shape)).astype(np.float32)
            for i in spec.get_spec().description.input}
    feed["timestep"] = np.full(feed["timestep"].shape, 500.0, np.float32)
    ref = spec.predict(feed)["noise_pred"]
    pal = ct.models.MLModel(str(small / "Unet.mlpackage"), compute_units=ct.ComputeUnit.CPU_ONLY).predict(feed)["noise_pred"]
    noise_bound, image_bound = MAC_BOUNDS[bits]
    assert 0 < palette_check.max_rel(pal, ref) <= noise_bound
    req = REQUEST.replace(width=256, height=256)
    images = []
    for folder in (coreml_model, small):
        engine = load_coreml_engine(folder, "CPU_ONLY", cache=CompiledModelCache(tmp_path / "compiled"))
        images.append(np.stack([np.asarray(g.image, np.float32) / 255.0 for g in engine.generate(req).images]))
        engine.close()
    assert np.abs(images[1] - images[0]).max() <= image_bound
