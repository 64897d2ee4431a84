"""ControlNet in Apple's Core ML layout: ControlledUnet, controlnet/<name>, convert --controlnet.

The conversion is real (coremltools on this machine); prediction is by the torch modules the
packages were traced from, as in test_coreml_engine.py (Core ML's own arithmetic needs a Mac).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core import GenerationRequest, InvalidRequest
from heyim_desktop.core.controlnet import ControlUnit
from heyim_desktop.core.coreml import modules as M  # noqa: N812
from heyim_desktop.core.coreml.controlnet import controlnet_inputs, residual_inputs, residual_specs
from heyim_desktop.core.coreml.detect import detect_coreml_folder
from heyim_desktop.core.coreml.engine import load_coreml_engine
from heyim_desktop.core.coreml.reference import TorchReferencePredictor

MAX_LEVELS = 4.0
MEAN_LEVELS = 0.5
UNET_INPUTS = [("sample", (2, 4, 32, 32), np.float16), ("timestep", (2,), np.float16),
               ("encoder_hidden_states", (2, 32, 1, 77), np.float16)]


def _hint() -> Image.Image:
    rng = np.random.RandomState(8)
    return Image.fromarray((rng.rand(256, 256, 3) * 255).astype(np.uint8))


def _pixels(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) for g in result.images])


def _close(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a - b)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())


@pytest.fixture(scope="module")
def coreml_controlled(tiny_model: Path, tiny_controlnet: Path, coreml_model: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the tiny ControlNet, converted once per module (original attention, the
    cheaper conversion; its TextEncoder and VAEDecoder reused from the session's conversion)."""
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    stages: list[str] = []
    out = convert_to_coreml(tiny_model, tmp_path_factory.mktemp("coreml") / "tiny-coreml-controlled",
                            attention="original", include_encoder=False, reuse_from=coreml_model,
                            controlnets=[tiny_controlnet], progress=lambda p: stages.append(p.label))
    assert "ControlNet tiny-controlnet" in stages and "ControlledUnet" in stages
    return out


@pytest.mark.parametrize("attention", ["original", "split_einsum"])
def test_controlled_unet_fed_zeros_is_the_plain_unet(tiny_model: Path, tiny_controlnet: Path, attention: str) -> None:
    from heyim_desktop.core.controlnet_models import load_controlnet
    from heyim_desktop.core.coreml.source import load_source

    parts = load_source(tiny_model)
    unet = M.unet_for(parts.unet, attention)
    net = load_controlnet(tiny_controlnet, device=torch.device("cpu"), dtype=torch.float32)
    residuals = residual_specs(net, UNET_INPUTS, (256, 256))
    assert [n for n, _, _ in residuals] == [f"additional_residual_{i}" for i in range(len(residuals))]
    torch.manual_seed(0)
    args = [torch.randn(s) for _, s, _ in UNET_INPUTS]
    args[1] = torch.full((2,), 500.0)
    with torch.no_grad():
        plain = M.UnetModule(unet)(*args)
        zeros = M.ControlledUnetModule(unet)(*args, *(torch.zeros(s) for _, s, _ in residuals))
        pushed = M.ControlledUnetModule(unet)(*args, *(torch.ones(s) for _, s, _ in residuals))
    assert torch.equal(plain, zeros)
    assert not torch.allclose(plain, pushed)  # the residuals do reach the UNet
    parts.release()


@pytest.mark.slow  # converts a UNet and a ControlNet with coremltools
def test_conversion_writes_apples_controlnet_layout(coreml_controlled: Path, tiny_controlnet: Path) -> None:
    from heyim_desktop.core.controlnet_models import load_controlnet

    assert (coreml_controlled / "ControlledUnet.mlpackage").is_dir()
    assert not (coreml_controlled / "Unet.mlpackage").exists()
    assert (coreml_controlled / "controlnet" / "tiny-controlnet.mlpackage").is_dir()
    info = detect_coreml_folder(coreml_controlled)
    assert info.controlnet_names == ("tiny-controlnet",) and info.unet_names == ("Unet",)
    unet = info.model("Unet")
    assert unet.path.name == "ControlledUnet.mlpackage"
    net = load_controlnet(tiny_controlnet, device=torch.device("cpu"), dtype=torch.float32)
    expected = residual_specs(net, UNET_INPUTS, (256, 256))
    assert [(t.name, t.shape) for t in unet.inputs] == [(n, s) for n, s, _ in [*UNET_INPUTS, *expected]]
    assert [t.name for t in residual_inputs(unet)] == [n for n, _, _ in expected]
    cn = info.model("controlnet/tiny-controlnet")
    assert [(t.name, t.shape) for t in cn.inputs] == [(n, s) for n, s, _ in controlnet_inputs(UNET_INPUTS, (256, 256))]
    assert [(t.name, t.shape) for t in cn.outputs] == [(n, s) for n, s, _ in expected]
    assert all(t.dtype == "float16" for t in unet.inputs)


@pytest.mark.slow  # needs the conversion above; three 256x256 generations on each engine
def test_core_ml_controlnet_equals_the_torch_engine(coreml_controlled: Path, tiny_model: Path, tiny_controlnet: Path,  # type: ignore[no-untyped-def]
                                                    tiny_engine, tmp_path: Path) -> None:
    info = detect_coreml_folder(coreml_controlled)
    predictor = TorchReferencePredictor(tiny_model, info, {"tiny-controlnet": tiny_controlnet})
    engine = load_coreml_engine(coreml_controlled, predictor=predictor)
    assert engine.capabilities.controlnet
    base = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=3, seed=11, width=256, height=256)
    plain = engine.generate(base)
    _close(_pixels(plain), _pixels(tiny_engine.generate(base)))  # fed zeros: the plain UNet's image
    assert {k for k in predictor.calls[3][1] if k.startswith("additional_residual_")}
    for unit_kw in ({"weight": 0.8}, {"weight": 1.2, "mode": "controlnet", "end": 0.7}):
        req = base.replace(controlnets=(ControlUnit(model="tiny-controlnet", image=_hint(), **unit_kw),))
        ours = engine.generate(req)
        torch_req = base.replace(controlnets=(ControlUnit(model=str(tiny_controlnet), image=_hint(), **unit_kw),))
        _close(_pixels(ours), _pixels(tiny_engine.generate(torch_req)))
        assert np.abs(_pixels(ours) - _pixels(plain)).max() > 8  # the ControlNet changed the image
    assert any(name == "controlnet/tiny-controlnet" for name, _ in predictor.calls)
    with pytest.raises(InvalidRequest, match="has no Core ML ControlNet 'canny'.*tiny-controlnet"):
        engine.generate(base.replace(controlnets=(ControlUnit(model="canny", image=_hint()),)))
    engine.close()
    # The same UNet without a controlnet folder: runs (zeros), and says it takes no ControlNet.
    bare = tmp_path / "bare"
    shutil.copytree(coreml_controlled, bare, ignore=shutil.ignore_patterns("controlnet"))
    info = detect_coreml_folder(bare)
    alone = load_coreml_engine(bare, predictor=TorchReferencePredictor(tiny_model, info))
    assert not alone.capabilities.controlnet
    assert np.array_equal(_pixels(alone.generate(base)), _pixels(plain))
    alone.close()


def test_controlnet_conversion_refuses_what_it_cannot_make(tiny_model: Path, tiny_controlnet: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop import cli
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    # The CLI hands --controlnet to the converter (which refuses a chunked ControlledUnet at once).
    code = cli.main(["convert", str(tiny_model), str(tmp_path / "c"), "--controlnet", str(tiny_controlnet), "--chunk-unet"])
    assert code != 0 and "chunk-unet" in capsys.readouterr().err

    with pytest.raises(InvalidRequest, match="chunk-unet"):
        convert_to_coreml(tiny_model, tmp_path / "a", chunk_unet=True, controlnets=[tiny_controlnet])
    with pytest.raises(InvalidRequest, match="share a name"):
        convert_to_coreml(tiny_model, tmp_path / "b", controlnets=[tiny_controlnet, tiny_controlnet])
    assert not any((tmp_path / n).exists() for n in "abc")


@pytest.mark.macos
@pytest.mark.slow
def test_real_core_ml_controlnet_matches_torch(coreml_controlled: Path, tiny_controlnet: Path, tiny_engine,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    """Core ML's own compiler and fp16 arithmetic on the ControlledUnet and the ControlNet."""
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache

    engine = load_coreml_engine(coreml_controlled, "CPU_ONLY", cache=CompiledModelCache(tmp_path / "compiled"))
    base = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=3, seed=5, width=256, height=256)
    ours = _pixels(engine.generate(base.replace(controlnets=(ControlUnit(model="tiny-controlnet", image=_hint()),))))
    theirs = _pixels(tiny_engine.generate(base.replace(controlnets=(ControlUnit(model=str(tiny_controlnet), image=_hint()),))))
    assert np.abs(ours - theirs).mean() <= 6.0  # fp16 throughout, as test_coreml_macos.py bounds it
    engine.close()
