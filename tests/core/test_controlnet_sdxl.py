"""ControlNet on the tiny SDXL model, against diffusers' StableDiffusionXLControlNetPipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.controlnet import ControlUnit
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


@pytest.fixture(scope="module")
def xl_controlnet(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from controlnet_layout import build_tiny_controlnet

    return build_tiny_controlnet(tiny_sdxl, tmp_path_factory.mktemp("xl-cn") / "tiny-xl-controlnet", seed=7)


def _control(seed: int = 2) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


@pytest.mark.parametrize(("weight", "end", "guess"), [(0.8, 1.0, False), (1.1, 0.6, True)])
def test_sdxl_controlnet_equals_diffusers(tiny_sdxl_engine, tiny_sdxl: Path, xl_controlnet: Path,  # type: ignore[no-untyped-def]
                                          weight: float, end: float, guess: bool) -> None:
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    unit = ControlUnit(model=str(xl_controlnet), image=_control(), weight=weight, end=end,
                       mode="controlnet" if guess else "balanced")
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=6.0, seed=11,
                            width=64, height=64, scheduler="Euler", controlnets=(unit,))
    ours = run_loop(tiny_sdxl_engine.components, req).images
    net = ControlNetModel.from_pretrained(xl_controlnet, local_files_only=True)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(tiny_sdxl, controlnet=net, local_files_only=True,
                                                               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler", tiny_sdxl_engine.components.scheduler_config)
    ref = pipe("a red fox", negative_prompt="blurry", image=unit.image, height=64, width=64, num_inference_steps=4,
               guidance_scale=6.0, controlnet_conditioning_scale=weight, control_guidance_end=end, guess_mode=guess,
               generator=torch.Generator("cpu").manual_seed(11), output_type="np").images
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL
    plain = run_loop(tiny_sdxl_engine.components, req.replace(controlnets=())).images
    assert np.abs(ours - plain).max() > 1e-3
