"""Hires fix equals its three steps by hand (diffusers' txt2img, the upscale, diffusers' img2img)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.pipeline import run_hires, upscale_latents
from heyim_desktop.core.request import GenerationRequest, HiresFix
from heyim_desktop.core.result import Progress
from heyim_desktop.core.schedulers import build_scheduler
from heyim_desktop.core.upscale import load_upscaler, upscale_image

TOL = 1e-4


@pytest.fixture(scope="module")
def pipes(tiny_model: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    t2i = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False,
                                                  local_files_only=True)
    t2i.set_progress_bar_config(disable=True)
    i2i = StableDiffusionImg2ImgPipeline(**t2i.components)
    i2i.set_progress_bar_config(disable=True)
    return t2i, i2i


def _request(hires: HiresFix, **kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=6.0, seed=11,
                                   width=64, height=64, scheduler="Euler a", hires=hires)
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def _by_hand(pipes, components, req: GenerationRequest, seed: int, upscale) -> np.ndarray:  # type: ignore[no-untyped-def]
    t2i, i2i = pipes
    hires = req.hires
    assert hires is not None
    for p in pipes:
        p.scheduler = build_scheduler(req.scheduler_name, components.scheduler_config)
    latent = hires.upscaler.startswith("Latent")
    first = t2i(req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=req.steps,
                guidance_scale=req.guidance, width=req.width, height=req.height,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="latent" if latent else "pil").images
    init = upscale(first[0] if not latent else first)
    return i2i(req.prompt, negative_prompt=req.negative_prompt, image=init, strength=hires.denoising_strength,
               num_inference_steps=hires.steps or req.steps, guidance_scale=req.guidance,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images


def test_lanczos_hires_equals_the_three_steps(tiny_engine, pipes) -> None:  # type: ignore[no-untyped-def]
    req = _request(HiresFix(scale=1.5, upscaler="Lanczos", steps=6, denoising_strength=0.5))
    ours = run_hires(tiny_engine.components, req)
    assert ours.images.shape == (1, 96, 96, 3) and ours.first_pass is None
    ref = _by_hand(pipes, tiny_engine.components, req, 11, lambda im: upscale_image(im, size=(96, 96)).image)
    assert np.abs(ours.images - ref).max() <= TOL


@pytest.mark.parametrize("mode", ["Latent", "Latent (nearest-exact)"])
def test_latent_hires_equals_the_three_steps(tiny_engine, pipes, mode: str) -> None:  # type: ignore[no-untyped-def]
    req = _request(HiresFix(scale=2, upscaler=mode, denoising_strength=0.75), scheduler="DPM++ 2M")
    ours = run_hires(tiny_engine.components, req)
    assert ours.images.shape == (1, 128, 128, 3)
    ref = _by_hand(pipes, tiny_engine.components, req, 11, lambda lat: upscale_latents(lat, (16, 16), mode))
    assert np.abs(ours.images - ref).max() <= TOL


def test_model_hires_with_two_images_equals_the_steps_per_seed(tiny_engine, tmp_path: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from tiny_upscaler import make_esrgan

    st, _ = make_esrgan(tmp_path, 2)
    hires = HiresFix(scale=2, upscaler="tiny", upscaler_path=str(st), denoising_strength=0.5, save_first_pass=True)
    req = _request(hires, count=2, seed=20)
    seen: list[Progress] = []
    ours = run_hires(tiny_engine.components, req, progress=seen.append)
    assert ours.seeds == [20, 21] and ours.first_pass is not None and ours.first_pass.shape == (2, 64, 64, 3)
    assert seen[-1].step == seen[-1].total and [p.step for p in seen] == sorted(p.step for p in seen)
    from heyim_desktop.core.engine import floats_to_pil

    model = load_upscaler(st, device="cpu")
    first = run_loop(tiny_engine.components, req.replace(hires=None))
    assert np.abs(first.images - ours.first_pass).max() == 0
    for i, image in enumerate(floats_to_pil(first.images)):
        big = upscale_image(image, size=(128, 128), model=model).image
        second = req.replace(hires=None, count=1, seed=20 + i, width=128, height=128, init_image=big, strength=0.5,
                             guidance_boost=0.0)
        alone = run_loop(tiny_engine.components, second).images[0]
        assert np.abs(ours.images[i] - alone).max() <= TOL


def test_engine_generate_keeps_first_pass_only_when_asked(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    result = tiny_engine.generate(_request(HiresFix(scale=1.5, upscaler="Nearest", steps=2, denoising_strength=0.5)))
    assert result.images[0].image.size == (96, 96) and result.first_pass == ()
    result = tiny_engine.generate(_request(HiresFix(scale=1.5, upscaler="Latent", steps=2, save_first_pass=True)))
    assert result.images[0].image.size == (96, 96) and result.first_pass[0].image.size == (64, 64)


def test_hires_settings_are_checked() -> None:
    from PIL import Image

    with pytest.raises(InvalidRequest, match="hires_scale"):
        _request(HiresFix(scale=40.0))
    with pytest.raises(InvalidRequest, match="hires_scale"):
        _request(HiresFix(scale=4.0), width=1024, height=1024)
    with pytest.raises(InvalidRequest, match="text-to-image"):
        _request(HiresFix(), init_image=Image.new("RGB", (64, 64)))
    with pytest.raises(InvalidRequest, match="denoising_strength"):
        HiresFix(denoising_strength=1.5)
    assert HiresFix(resize_x=200).target_size(64, 48) == (200, 144)
    assert HiresFix(resize_x=128, resize_y=96).target_size(64, 64) == (128, 96)


def test_unknown_model_upscaler_is_a_clear_error(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="no upscaler named"):
        run_hires(tiny_engine.components, _request(HiresFix(upscaler="4x-Nothing")))
