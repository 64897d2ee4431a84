"""fp16 safety (attention scores in fp32 for upcast-attention models) and weight palettization.

One micro UNet (one cross-attention level, 32 channels) is converted once for the module, in the
Neural Engine layout, as an ``upcast_attention`` model; its spec is read with coremltools.
The converter's wiring (which parts get which precision, target and palette) is checked on the
tiny model with coremltools' conversion replaced, so it costs no conversion.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from heyim_desktop.core.coreml import compression
from heyim_desktop.core.errors import InvalidRequest

MICRO_UNET: dict[str, Any] = dict(
    block_out_channels=(32,), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=32, attention_head_dim=1, norm_num_groups=8,
    sample_size=8, upcast_attention=True,
)


@pytest.fixture(scope="module")
def upcast_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    from heyim_desktop.core.coreml import modules as M  # noqa: N812
    from heyim_desktop.core.coreml.convert import _convert, _quiet_coremltools

    _quiet_coremltools()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MICRO_UNET).eval()
    precision, note = compression.unet_precision(unet.config)
    assert precision == "fp16-attention-fp32" and "fp32" in note
    f16 = np.float16
    inputs = [("sample", (2, 4, 8, 8), f16), ("timestep", (2,), f16), ("encoder_hidden_states", (2, 32, 1, 77), f16)]
    model = _convert(M.UnetModule(M.unet_for(unet, "split_einsum")), inputs, [("noise_pred", np.float32)], precision=precision)
    out = tmp_path_factory.mktemp("micro") / "Unet.mlpackage"
    model.save(str(out))
    return out


def _ops(package: Path) -> list[tuple[str, str, list[str]]]:
    """(op type, first output's element type, names of its inputs) for each non-const op."""
    from coremltools.models.utils import load_spec
    from coremltools.proto import MIL_pb2

    spec = load_spec(str(package))
    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    ops = []
    for op in block.operations:
        if op.type == "const":
            continue
        dtype = MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)
        inputs = [a.name for arg in op.inputs.values() for a in arg.arguments if a.name]
        ops.append((op.type, dtype, inputs))
    return ops


@pytest.mark.slow  # one coremltools conversion (about 10 s on 2 cores)
def test_upcast_attention_keeps_scores_and_softmax_fp32(upcast_package: Path) -> None:
    from coremltools.models.utils import load_spec
    from coremltools.proto import MIL_pb2

    spec = load_spec(str(upcast_package))
    block = spec.mlProgram.functions["main"].block_specializations[spec.mlProgram.functions["main"].opset]
    producer = {o.name: op for op in block.operations for o in op.outputs}
    kinds = {op.outputs[0].name: MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType) for op in block.operations}
    softmaxes = [op for op in block.operations if op.type == "softmax"]
    assert softmaxes
    for op in softmaxes:
        assert kinds[op.outputs[0].name] == "FLOAT32"
        source = producer[op.inputs["x"].arguments[0].name]
        assert source.type == "einsum" and kinds[source.outputs[0].name] == "FLOAT32"  # q . k in fp32
    ops = _ops(upcast_package)
    convs = [dtype for kind, dtype, _ in ops if kind == "conv"]
    assert convs and set(convs) == {"FLOAT16"}  # the rest stays fp16
    einsums = [dtype for kind, dtype, _ in ops if kind == "einsum"]
    assert einsums.count("FLOAT32") == len(softmaxes) and einsums.count("FLOAT16") == len(softmaxes)  # weights . v in fp16


def test_precision_choices_and_bits() -> None:
    class Config:
        upcast_attention = False
        force_upcast = True

    assert compression.unet_precision(Config()) == ("fp16", "")
    assert compression.vae_precision(Config(), sdxl=False) == ("fp16", "")
    assert compression.vae_precision(Config(), sdxl=True)[0] == "fp32"
    Config.force_upcast = False  # a fixed fp16 VAE
    assert compression.vae_precision(Config(), sdxl=True)[0] == "fp16"
    assert [compression.minimum_macos(b) for b in (None, 8, 6, 4)] == [13, 14, 14, 15]
    with pytest.raises(InvalidRequest, match="8, 6 or 4"):
        compression.check_bits(5)
    config = compression.optimization_config(4).global_config
    assert config.nbits == 4 and config.group_size == 16 and "grouped" in str(config.granularity).lower()


@pytest.mark.slow  # k-means over the micro UNet's weights (a few seconds)
def test_palettized_package_has_lookup_tables_and_shrinks(upcast_package: Path, tmp_path: Path) -> None:
    import coremltools as ct

    from heyim_desktop.core.coreml.program import package_figures

    model = ct.models.MLModel(str(upcast_package), skip_model_load=True)
    small = compression.palettize(model, 6, weight_threshold=4096)
    out = tmp_path / "Unet6.mlpackage"
    small.save(str(out))
    before, after = compression.package_bytes(upcast_package), compression.package_bytes(out)
    figures = package_figures(out)
    convs = figures.count("conv")
    # every weight with 4096+ elements is a palette now (the 3x3 convs, the feed-forward's 1x1 convs)
    assert figures.count("constexpr_lut_to_dense") >= 12 and convs == 69
    assert after < 0.75 * before, (before, after)
    loaded = ct.models.MLModel(str(out), skip_model_load=True)  # loads back (spec level)
    assert loaded.get_spec().description.output[0].name == "noise_pred"
    assert package_figures(out).output_dtypes == {"noise_pred": "fp32"}


def test_convert_wires_precision_palettes_and_notes(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upcast-attention model converted with --quantize 6: which parts get fp32 attention, the
    macOS 14 target and a palette, and what the notes say; coremltools' work is faked here (the
    real conversion and palettization are checked above)."""
    from heyim_desktop.core.coreml import convert

    source = tmp_path / "sd2-768"
    shutil.copytree(tiny_model, source)
    config = json.loads((source / "unet" / "config.json").read_text())
    config["upcast_attention"] = True
    (source / "unet" / "config.json").write_text(json.dumps(config))
    calls: list[tuple[str, str, int]] = []

    class Saved:
        def __init__(self, payload: int) -> None:
            self.payload, self.user_defined_metadata, self.short_description = payload, {}, ""

        def save(self, path: str) -> None:
            Path(path).mkdir(parents=True)
            (Path(path) / "weights.bin").write_bytes(b"w" * self.payload)
            (Path(path) / "meta.json").write_text(json.dumps(self.user_defined_metadata))

    def fake_convert(module: Any, inputs: Any, outputs: Any, *, precision: str = "fp16", macos: int = 13) -> Saved:
        calls.append((type(module).__name__, precision, macos))
        return Saved(1000)

    palettized: list[int] = []
    monkeypatch.setattr(convert, "_convert", fake_convert)
    monkeypatch.setattr(compression, "palettize", lambda model, bits: (palettized.append(bits), Saved(400))[1])
    out = convert.convert_to_coreml(source, tmp_path / "out", quantize=6)
    assert calls == [("TextEncoderModule", "fp16", 14), ("UnetModule", "fp16-attention-fp32", 14),
                     ("VAEDecoderModule", "fp16", 13), ("VAEEncoderModule", "fp16", 13)]
    assert palettized == [6, 6]  # the text encoder and the UNet; the VAE stays fp16
    unet_meta = json.loads((out / "Unet.mlpackage" / "meta.json").read_text())
    assert unet_meta[compression.META_BITS] == "6" and "softmax" in unet_meta[compression.META_FP32_OPS]
    assert compression.META_BITS not in json.loads((out / "VAEDecoder.mlpackage" / "meta.json").read_text())
    notes = convert.conversion_notes(out)
    assert any("fp32" in n and "attention" in n for n in notes)
    assert any("6 bits" in n and "macOS 14" in n for n in notes)
    assert any(re.fullmatch(r"Unet: 1\.\d KB -> \d+ B \(6-bit palette\)", n) for n in notes), notes
    assert not list(out.glob(".*"))  # the fp16 copies measured for "before" are gone


def test_library_shows_the_bit_depth(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import coremltools as ct

    from heyim_desktop.core.coreml.detect import detect_coreml_folder
    from heyim_desktop.models.inspect import inspect_coreml

    assert detect_coreml_folder(model_copy).bits is None
    unet = model_copy / "Unet.mlpackage"
    model = ct.models.MLModel(str(unet), skip_model_load=True)
    model.user_defined_metadata[compression.META_BITS] = "6"
    model.save(str(model_copy / "new.mlpackage"))  # the loaded model reads its weights from the old package
    shutil.rmtree(unet)
    (model_copy / "new.mlpackage").rename(unet)
    assert detect_coreml_folder(model_copy).bits == 6
    monkeypatch.setattr(sys, "platform", "darwin")  # the library lists Core ML models as usable on a Mac only
    assert "6-bit weights" in inspect_coreml(model_copy).problem  # the library's note column
