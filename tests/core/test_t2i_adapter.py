"""T2I-Adapter units on the shared loop, against diffusers' StableDiffusion(XL)AdapterPipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.controlnet import ControlUnit
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


@pytest.fixture(scope="module")
def adapter_engine(adapter_sd: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(adapter_sd, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def sd_adapters(tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from adapter_layout import build_tiny_adapter

    return tiny_adapter, build_tiny_adapter(tmp_path_factory.mktemp("sd-adapters") / "tiny-adapter-b", seed=2)


def _control(seed: int = 2, size: int = 64) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))


def _request(units: list[ControlUnit], **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    kw = {"prompt": "a red fox", "negative_prompt": "blurry", "steps": 4, "guidance": 6.0, "seed": 11, "width": 64,
          "height": 64, "scheduler": "Euler", **kw}
    return GenerationRequest(controlnets=tuple(units), **kw)


def _sd_reference(model: Path, units: list[ControlUnit], scheduler_config, *, steps: int = 4,  # type: ignore[no-untyped-def]
                  guidance: float = 6.0):
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

    adapters = [T2IAdapter.from_pretrained(u.model, local_files_only=True) for u in units]
    pipe = StableDiffusionAdapterPipeline.from_pretrained(
        model, adapter=adapters[0] if len(adapters) == 1 else adapters, safety_checker=None,
        requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler", scheduler_config)
    many = len(units) > 1
    return pipe("a red fox", negative_prompt="blurry", image=[u.image for u in units] if many else units[0].image,
                height=64, width=64, num_inference_steps=steps, guidance_scale=guidance,
                adapter_conditioning_scale=[u.weight for u in units] if many else units[0].weight,
                generator=torch.Generator("cpu").manual_seed(11), output_type="np").images


def test_one_adapter_equals_diffusers(adapter_engine, adapter_sd: Path, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    unit = ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7)
    ours = run_loop(adapter_engine.components, _request([unit])).images
    ref = _sd_reference(adapter_sd, [unit], adapter_engine.components.scheduler_config)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert np.abs(ours - ref).max() <= TOL
    plain = run_loop(adapter_engine.components, _request([])).images
    assert np.abs(ours - plain).max() > 1e-3  # the adapter changes the image


def test_two_adapters_equal_multiadapter(adapter_engine, adapter_sd: Path, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    units = [ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7),
             ControlUnit(model=str(sd_adapters[1]), image=_control(seed=9), weight=1.3)]
    ours = run_loop(adapter_engine.components, _request(units)).images
    ref = _sd_reference(adapter_sd, units, adapter_engine.components.scheduler_config)
    assert np.abs(ours - ref).max() <= TOL
    one = run_loop(adapter_engine.components, _request(units[:1])).images
    assert np.abs(ours - one).max() > 1e-3


def test_without_guidance(adapter_engine, adapter_sd: Path, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    unit = ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7)
    ours = run_loop(adapter_engine.components, _request([unit], guidance=1.0)).images
    ref = _sd_reference(adapter_sd, [unit], adapter_engine.components.scheduler_config, guidance=1.0)
    assert np.abs(ours - ref).max() <= TOL


def test_adapter_with_a_controlnet(adapter_engine, adapter_sd: Path, sd_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One adapter and one ControlNet: each UNet call gets the ControlNet's residuals exactly as
    without the adapter, and the adapter's features exactly as without the ControlNet."""
    from controlnet_layout import build_tiny_controlnet
    from heyim_desktop.core.conditioning import UNetCall
    from heyim_desktop.core.extensions import extensions_for
    from heyim_desktop.core.guidance import ClassifierFree

    net = build_tiny_controlnet(adapter_sd, tmp_path / "cn", seed=4)
    adapter = ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7)
    control = ControlUnit(model=str(net), image=_control(seed=5), weight=0.9)
    comps = adapter_engine.components

    def call_for(units: list[ControlUnit]) -> UNetCall:
        req = _request(units)
        prompts = comps.encode_prompts(req, with_negative=True)
        guid = ClassifierFree(type(prompts.cond).cat([prompts.uncond, prompts.cond]), 6.0)
        state = type("S", (), {"timesteps": torch.arange(4), "step_index": 1, "guidance": guid})()
        call = UNetCall(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(10), guid.text)
        with torch.inference_mode():
            for ext in extensions_for(req, comps):
                ext.before_unet(state, call)  # type: ignore[arg-type]
        return call

    both, only_net, only_adapter = call_for([adapter, control]), call_for([control]), call_for([adapter])
    assert only_net.intrablock_residuals is None and only_adapter.down_residuals is None
    for a, b in zip(both.down_residuals, only_net.down_residuals):
        assert torch.equal(a, b)
    for a, b in zip(both.intrablock_residuals, only_adapter.intrablock_residuals):
        assert torch.equal(a, b)
    mixed = run_loop(comps, _request([adapter, control])).images
    for alone in ([adapter], [control]):
        assert np.abs(mixed - run_loop(comps, _request(alone)).images).max() > 1e-3


def test_start_end_and_single_file(adapter_engine, sd_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from adapter_layout import write_adapter_file

    unit = ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7)
    base = run_loop(adapter_engine.components, _request([unit])).images
    for target, sidecar in ((tmp_path / "bare.safetensors", False), (tmp_path / "with-config.safetensors", True)):
        single = write_adapter_file(sd_adapters[0], target, sidecar=sidecar)
        out = run_loop(adapter_engine.components, _request([ControlUnit(model=str(single), image=_control(), weight=0.7)]))
        assert np.abs(out.images - base).max() <= TOL, target.name
    cut = run_loop(adapter_engine.components, _request([ControlUnit(model=str(sd_adapters[0]), image=_control(),
                                                                     weight=0.7, end=0.5)])).images
    assert np.abs(cut - base).max() > 1e-4


def test_sd_adapter_on_sdxl_is_refused(tiny_sdxl_engine, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    unit = ControlUnit(model=str(sd_adapters[0]), image=_control())
    with pytest.raises(ModelError, match=r"for SD 1.x/2.x models .*loaded model is SDXL; choose a T2I-Adapter for SDXL"):
        run_loop(tiny_sdxl_engine.components, _request([unit], steps=2))


def test_adapter_that_does_not_fit_the_unet_is_refused(tiny_engine, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    # The session's tiny SD adds its first feature after downsampling: an SD adapter's does not fit.
    unit = ControlUnit(model=str(sd_adapters[0]), image=_control())
    with pytest.raises(ModelError, match=r"does not fit this model's UNet: it makes features 32x8x8, 64x4x4; "
                                         r"the UNet takes 32x4x4, 64x4x4"):
        run_loop(tiny_engine.components, _request([unit], steps=2))


def test_bad_files_and_core_ml(adapter_engine, sd_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from adapter_layout import write_original_layout
    from heyim_desktop.core.adapter_extension import AdapterExtension

    original = write_original_layout(sd_adapters[0], tmp_path / "t2iadapter_canny_sd15v2.safetensors")
    with pytest.raises(ModelError, match="TencentARC's original layout"):
        run_loop(adapter_engine.components, _request([ControlUnit(model=str(original), image=_control())], steps=2))
    config = json.loads((sd_adapters[0] / "config.json").read_text())
    assert config["_class_name"] == "T2IAdapter"

    class CoreMLLike:  # what Core ML components offer: ControlNets, no adapter loader
        capabilities = adapter_engine.components.capabilities
        controlnet_model = None

    with pytest.raises(InvalidRequest, match="PyTorch engine only .*Core ML"):
        AdapterExtension(_request([ControlUnit(model=str(sd_adapters[0]), image=_control())]), CoreMLLike())  # type: ignore[arg-type]


def test_one_channel_adapter_takes_the_luma(adapter_engine, adapter_sd: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from adapter_layout import build_tiny_adapter

    gray = build_tiny_adapter(tmp_path / "gray", seed=3, in_channels=1)
    edges = _control().convert("L")
    unit = ControlUnit(model=str(gray), image=edges.convert("RGB"), weight=0.7)
    ours = run_loop(adapter_engine.components, _request([unit])).images
    ref = _sd_reference(adapter_sd, [ControlUnit(model=str(gray), image=edges, weight=0.7)],
                        adapter_engine.components.scheduler_config)
    assert np.abs(ours - ref).max() <= TOL


def test_control_modes_follow_the_extensions_adapter_rules(adapter_engine, sd_adapters) -> None:  # type: ignore[no-untyped-def]
    """Balanced: weight on both halves; "prompt": the weight times 0.25, 0.62, ... per feature;
    "controlnet": the prompt half only (zeros for the negative)."""
    from heyim_desktop.core.adapter_extension import SOFT_SCALES, AdapterExtension
    from heyim_desktop.core.conditioning import UNetCall
    from heyim_desktop.core.guidance import ClassifierFree

    comps = adapter_engine.components

    def features(mode: str) -> list[torch.Tensor]:
        req = _request([ControlUnit(model=str(sd_adapters[0]), image=_control(), weight=0.7, mode=mode)])
        prompts = comps.encode_prompts(req, with_negative=True)
        guid = ClassifierFree(type(prompts.cond).cat([prompts.uncond, prompts.cond]), 6.0)
        state = type("S", (), {"timesteps": torch.arange(4), "step_index": 0, "guidance": guid})()
        call = UNetCall(torch.zeros(2, 4, 8, 8), torch.tensor(10), guid.text)
        with torch.inference_mode():
            AdapterExtension(req, comps).before_unet(state, call)  # type: ignore[arg-type]
        assert call.intrablock_residuals is not None
        return call.intrablock_residuals

    balanced, soft, strong = features("balanced"), features("prompt"), features("controlnet")
    for b, s, c, k in zip(balanced, soft, strong, SOFT_SCALES):
        assert torch.equal(b[0], b[1]) and b.abs().max() > 0
        assert torch.allclose(s, b * k, atol=1e-6)
        assert torch.equal(c[0], torch.zeros_like(c[0])) and torch.equal(c[1], b[1])
    assert len(balanced) == 2  # the tiny UNet's two down blocks
