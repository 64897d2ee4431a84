"""T2I-Adapters on the tiny SDXL model, against diffusers' StableDiffusionXLAdapterPipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.controlnet import ControlUnit
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


@pytest.fixture(scope="module")
def xl_adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from adapter_layout import build_tiny_adapter

    root = tmp_path_factory.mktemp("xl-adapters")
    return (build_tiny_adapter(root / "tiny-xl-adapter", seed=7, xl=True),
            build_tiny_adapter(root / "tiny-xl-adapter-b", seed=8, xl=True))


def _control(seed: int = 2) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


def _reference(tiny_sdxl: Path, units: list[ControlUnit], scheduler_config, factor: float):  # type: ignore[no-untyped-def]
    from diffusers import MultiAdapter, StableDiffusionXLAdapterPipeline, T2IAdapter

    adapters = [T2IAdapter.from_pretrained(u.model, local_files_only=True) for u in units]
    many = len(units) > 1
    pipe = StableDiffusionXLAdapterPipeline.from_pretrained(
        tiny_sdxl, adapter=MultiAdapter(adapters) if many else adapters[0], local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler", scheduler_config)
    return pipe("a red fox", negative_prompt="blurry", image=[u.image for u in units] if many else units[0].image,
                height=64, width=64, num_inference_steps=4, guidance_scale=6.0,
                adapter_conditioning_scale=[u.weight for u in units] if many else units[0].weight,
                adapter_conditioning_factor=factor, generator=torch.Generator("cpu").manual_seed(11),
                output_type="np").images


@pytest.mark.parametrize(("count", "factor"), [(1, 1.0), (1, 0.5), (2, 0.75)])
def test_sdxl_adapters_equal_diffusers(tiny_sdxl_engine, tiny_sdxl: Path, xl_adapters, count: int,  # type: ignore[no-untyped-def]
                                       factor: float) -> None:
    """The conditioning factor is the units' guidance end (start 0)."""
    units = [ControlUnit(model=str(xl_adapters[0]), image=_control(), weight=0.7, end=factor),
             ControlUnit(model=str(xl_adapters[1]), image=_control(seed=9), weight=1.2, end=factor)][:count]
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=6.0, seed=11,
                            width=64, height=64, scheduler="Euler", controlnets=tuple(units))
    ours = run_loop(tiny_sdxl_engine.components, req).images
    ref = _reference(tiny_sdxl, units, tiny_sdxl_engine.components.scheduler_config, factor)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert np.abs(ours - ref).max() <= TOL
    plain = run_loop(tiny_sdxl_engine.components, req.replace(controlnets=())).images
    assert np.abs(ours - plain).max() > 1e-3


def test_sdxl_adapter_on_sd_is_refused(tiny_engine, xl_adapters) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="fox", seed=1, width=64, height=64, steps=2,
                            controlnets=(ControlUnit(model=str(xl_adapters[0]), image=_control()),))
    with pytest.raises(ModelError, match=r"for SDXL models \(adapter_type 'full_adapter_xl'\), but the loaded "
                                         r"model is SD 1.x/2.x"):
        run_loop(tiny_engine.components, req)


def test_sdxl_adapter_needs_sizes_in_its_unshuffle_steps(tiny_sdxl_engine, xl_adapters) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.errors import InvalidRequest

    req = GenerationRequest(prompt="fox", seed=1, width=72, height=64, steps=2,
                            controlnets=(ControlUnit(model=str(xl_adapters[0]), image=_control()),))
    with pytest.raises(InvalidRequest, match="multiples of 16, got 72x64"):
        run_loop(tiny_sdxl_engine.components, req)
