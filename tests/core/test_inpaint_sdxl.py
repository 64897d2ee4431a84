"""SDXL inpainting on the shared loop, against diffusers' StableDiffusionXLInpaintPipeline.

Both paths: the tiny SDXL base (4-channel UNet: the kept area blended back after each step)
and the same model with a 9-channel inpainting UNet (mask and masked latents stacked on
the UNet's input). Float images are compared before the paste-back step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.masking import Extend, InpaintSpec
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


def _image(size: int = 64, seed: int = 3) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))


def _mask(size: int = 64) -> Image.Image:
    arr = np.zeros((size, size), np.uint8)
    arr[16:48, 8:40] = 255
    return Image.fromarray(arr, mode="L")


@pytest.fixture(scope="module")
def tiny_sdxl_inpaint(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL with a 9-channel (inpainting) UNet of random weights."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("sdxl-inpaint") / "tiny-sdxl-inpaint"
    shutil.copytree(tiny_sdxl, folder)
    config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    config["in_channels"] = 9
    torch.manual_seed(2)
    unet = UNet2DConditionModel.from_config(config)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sdxl_inpaint_engine(tiny_sdxl_inpaint: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(tiny_sdxl_inpaint, device="cpu")
    yield engine
    engine.close()


_PIPES: dict[Path, object] = {}


def _pipe(folder: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLInpaintPipeline

    if folder not in _PIPES:
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(folder, local_files_only=True, add_watermarker=False)
        pipe.set_progress_bar_config(disable=True)
        _PIPES[folder] = pipe
    return _PIPES[folder]


def _compare(engine, folder: Path, scheduler: str, strength: float, guidance: float = 6.0,  # type: ignore[no-untyped-def]
             negative: str = "blurry") -> np.ndarray:
    init, mask = _image(), _mask()
    req = GenerationRequest(
        prompt="a red fox", negative_prompt=negative, steps=4, guidance=guidance, seed=11, width=64, height=64,
        scheduler=scheduler, init_image=init, strength=strength, guidance_boost=0.0,
        inpaint=InpaintSpec(mask=mask, blur=0),
    )
    ours = run_loop(engine.components, req).images
    pipe = _pipe(folder)
    pipe.scheduler = build_scheduler(scheduler, engine.components.scheduler_config)
    ref = pipe(
        "a red fox", negative_prompt=negative or None, image=init, mask_image=mask, height=64, width=64,
        strength=strength, num_inference_steps=4, guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(11), output_type="np",
    ).images
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ours.std() > 0.01
    assert np.abs(ours - ref).max() <= TOL
    return ours


@pytest.mark.parametrize(("scheduler", "strength"), [("DPM++ 2M", 1.0), ("Euler a", 0.75)])
def test_sdxl_base_blends_like_diffusers(tiny_sdxl_engine, tiny_sdxl: Path, scheduler: str, strength: float) -> None:  # type: ignore[no-untyped-def]
    assert tiny_sdxl_engine.info.capabilities.inpaint == "blend"
    _compare(tiny_sdxl_engine, tiny_sdxl, scheduler, strength)


@pytest.mark.parametrize(("scheduler", "strength", "guidance"), [("DPM++ 2M", 1.0, 6.0), ("Euler a", 0.8, 1.0)])
def test_sdxl_inpainting_unet_concats_like_diffusers(  # type: ignore[no-untyped-def]
    sdxl_inpaint_engine, tiny_sdxl_inpaint: Path, scheduler: str, strength: float, guidance: float
) -> None:
    caps = sdxl_inpaint_engine.info.capabilities
    assert caps.inpaint == "concat" and caps.family == "sdxl"
    _compare(sdxl_inpaint_engine, tiny_sdxl_inpaint, scheduler, strength, guidance, negative="")


@pytest.mark.parametrize("which", ["base", "inpainting"])
def test_sdxl_paste_back_and_outpaint_keep_the_original(tiny_sdxl_engine, sdxl_inpaint_engine, which: str) -> None:  # type: ignore[no-untyped-def]
    engine = tiny_sdxl_engine if which == "base" else sdxl_inpaint_engine
    init, mask = _image(), _mask()
    req = GenerationRequest(prompt="a fox", steps=2, seed=2, width=64, height=64, init_image=init, strength=1.0,
                            inpaint=InpaintSpec(mask=mask, blur=0))
    out = np.asarray(engine.generate(req).images[0].image)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])
    grown = engine.generate(req.replace(inpaint=None, extend=Extend(right=16, top=8)))
    image = np.asarray(grown.images[0].image)
    assert image.shape == (72, 80, 3)
    assert np.array_equal(image[8:72, 0:64], np.asarray(init))
