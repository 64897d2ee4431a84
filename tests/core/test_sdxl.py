"""SDXL through the shared loop against diffusers' SDXL pipelines on a tiny random SDXL."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.loop import Stage, run_loop
from heyim_desktop.core.refine import run_refined
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4
SCHEDULERS = ("DPM++ 2M", "Euler a", "DDIM")


@pytest.fixture(scope="module")
def xl_pipe(tiny_sdxl: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def xl_img2img(xl_pipe):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline(**xl_pipe.components, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def refiner_pipe(tiny_sdxl_refiner: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl_refiner, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def refiner_engine(tiny_sdxl_refiner: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(tiny_sdxl_refiner, device="cpu")
    yield engine
    engine.close()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _init_image() -> Image.Image:
    rng = np.random.RandomState(3)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


def test_capabilities_and_info(tiny_sdxl_engine, refiner_engine) -> None:  # type: ignore[no-untyped-def]
    caps = tiny_sdxl_engine.info.capabilities
    assert caps.family == "sdxl" and caps.guidance == "cfg" and caps.img2img
    assert tiny_sdxl_engine.default_size == caps.default_size == (256, 256)  # sample_size 32 x 8
    assert tiny_sdxl_engine.components.scaling_factor == pytest.approx(0.13025)
    assert refiner_engine.info.capabilities.family == "sdxl-refiner"
    assert refiner_engine.components.requires_aesthetics_score
    assert not tiny_sdxl_engine.components.requires_aesthetics_score
    assert tiny_sdxl_engine.count_tokens("a red fox").tokens == 3


@pytest.mark.parametrize(("scheduler", "negative"), [("DPM++ 2M", "blurry"), ("Euler a", ""), ("DDIM", "ugly")])
def test_txt2img_matches_diffusers(tiny_sdxl_engine, xl_pipe, scheduler: str, negative: str) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a red fox", negative_prompt=negative, steps=3, guidance=6.0, seed=11,
                            width=64, height=64, scheduler=scheduler)
    ours = run_loop(tiny_sdxl_engine.components, req).images
    xl_pipe.scheduler = build_scheduler(scheduler, tiny_sdxl_engine.components.scheduler_config)
    ref = xl_pipe("a red fox", negative_prompt=negative or None, num_inference_steps=3, guidance_scale=6.0,
                  height=64, width=64, generator=_gen(11), output_type="np").images
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ours.std() > 0.01  # a real image, not a constant
    assert np.abs(ours - ref).max() <= TOL


def test_empty_negative_is_zeros_as_the_model_config_says(tiny_sdxl_engine, xl_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a cat", steps=2, guidance=5.0, seed=3, width=64, height=72, scheduler="Euler")
    ours = run_loop(tiny_sdxl_engine.components, req).images
    xl_pipe.scheduler = build_scheduler("Euler", tiny_sdxl_engine.components.scheduler_config)
    kwargs = dict(num_inference_steps=2, guidance_scale=5.0, height=72, width=64, output_type="np")
    zeros = xl_pipe("a cat", generator=_gen(3), **kwargs).images
    encoded = xl_pipe("a cat", negative_prompt="", generator=_gen(3), **kwargs).images
    assert np.abs(ours - zeros).max() <= TOL
    assert np.abs(ours - encoded).max() > 10 * TOL  # the zeros matter: the test can tell them apart
    enc = tiny_sdxl_engine.components.encode_prompts(req, with_negative=True)
    assert enc.uncond is not None and not enc.uncond.hidden.any() and not enc.uncond.pooled.any()
    assert enc.cond.hidden.shape == (1, 77, 96)  # 32 + 64 channels, as 768 + 1280 = 2048 at full size
    assert enc.cond.extras["time_ids"].tolist() == [[72.0, 64.0, 0.0, 0.0, 72.0, 64.0]]


def test_without_guidance_matches_diffusers(tiny_sdxl_engine, xl_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a dog", steps=2, guidance=1.0, seed=5, width=64, height=64, scheduler="DDIM")
    ours = run_loop(tiny_sdxl_engine.components, req).images
    xl_pipe.scheduler = build_scheduler("DDIM", tiny_sdxl_engine.components.scheduler_config)
    ref = xl_pipe("a dog", num_inference_steps=2, guidance_scale=1.0, height=64, width=64, generator=_gen(5),
                  output_type="np").images
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize(("scheduler", "strength"), [("DPM++ 2M", 0.75), ("Euler a", 1.0), ("DDIM", 0.5)])
def test_img2img_matches_diffusers(tiny_sdxl_engine, xl_img2img, scheduler: str, strength: float) -> None:  # type: ignore[no-untyped-def]
    init = _init_image()
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=6.0, seed=7,
                            width=64, height=64, scheduler=scheduler, init_image=init, strength=strength)
    ours = run_loop(tiny_sdxl_engine.components, req).images
    xl_img2img.scheduler = build_scheduler(scheduler, tiny_sdxl_engine.components.scheduler_config)
    ref = xl_img2img("a red fox", negative_prompt="blurry", image=init, strength=strength, num_inference_steps=4,
                     guidance_scale=req.effective_guidance, generator=_gen(7), output_type="np").images
    assert np.abs(ours - ref).max() <= TOL


def test_refiner_alone_uses_aesthetic_time_ids_like_diffusers(refiner_engine, refiner_pipe) -> None:  # type: ignore[no-untyped-def]
    init = _init_image()
    req = GenerationRequest(prompt="a red fox", steps=4, guidance=5.0, seed=2, width=64, height=64,
                            scheduler="Euler", init_image=init, strength=0.5)
    ours = run_loop(refiner_engine.components, req).images
    refiner_pipe.scheduler = build_scheduler("Euler", refiner_engine.components.scheduler_config)
    ref = refiner_pipe("a red fox", image=init, strength=0.5, num_inference_steps=4, guidance_scale=6.5,
                       generator=_gen(2), output_type="np").images
    assert np.abs(ours - ref).max() <= TOL
    enc = refiner_engine.components.encode_prompts(req, with_negative=True)
    assert enc.cond.extras["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 6.0]]
    assert enc.uncond is not None and enc.uncond.extras["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 2.5]]
    assert enc.uncond.hidden.any()  # the refiner's config does not zero the empty negative


@pytest.mark.parametrize(("scheduler", "switch"), [("DPM++ 2M", 0.8), ("Euler a", 0.6), ("DDIM", 0.5)])
def test_refiner_handover_matches_diffusers(  # type: ignore[no-untyped-def]
    tiny_sdxl_engine, refiner_engine, xl_pipe, refiner_pipe, scheduler: str, switch: float
) -> None:
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=5, guidance=6.0, seed=4,
                            width=64, height=64, scheduler=scheduler, refiner="tiny-refiner", refiner_switch=switch)
    ours = run_refined(tiny_sdxl_engine.components, refiner_engine.components, req).images
    xl_pipe.scheduler = build_scheduler(scheduler, tiny_sdxl_engine.components.scheduler_config)
    refiner_pipe.scheduler = build_scheduler(scheduler, refiner_engine.components.scheduler_config)
    latents = xl_pipe("a red fox", negative_prompt="blurry", num_inference_steps=5, guidance_scale=6.0, height=64,
                      width=64, denoising_end=switch, generator=_gen(4), output_type="latent").images
    ref = refiner_pipe("a red fox", negative_prompt="blurry", image=latents, num_inference_steps=5, guidance_scale=6.0,
                       denoising_start=switch, generator=_gen(4), output_type="np").images
    assert np.abs(ours - ref).max() <= TOL
    base_only = run_loop(tiny_sdxl_engine.components, req).images
    assert np.abs(ours - base_only).max() > 10 * TOL  # the refiner changed the image


def test_refined_job_through_the_engine_reports_one_progress_run(tiny_sdxl_engine, refiner_engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[Progress] = []
    req = GenerationRequest(prompt="a red fox", steps=5, guidance=6.0, seed=4, width=64, height=64, count=2,
                            scheduler="Euler", refiner="tiny-refiner", refiner_switch=0.6)
    result = tiny_sdxl_engine.generate(req, progress=seen.append, refiner=refiner_engine)
    assert len(result.images) == 2
    assert [p.step for p in seen] == list(range(1, len(seen) + 1))
    assert {p.total for p in seen} == {len(seen)} == {10}  # 3 base + 2 refiner steps, twice
    assert "refiner_denoise" in result.timings and "base_denoise" in result.timings
    with pytest.raises(ModelError, match="refiner"):
        tiny_sdxl_engine.generate(req)  # the refiner named in the request is required


def test_switch_that_leaves_a_stage_no_step_is_refused(tiny_sdxl_engine, refiner_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="x", steps=2, seed=1, width=64, height=64, scheduler="Euler",
                            refiner="r", refiner_switch=0.05)
    with pytest.raises(InvalidRequest, match="leaves the base model no step"):
        run_refined(tiny_sdxl_engine.components, refiner_engine.components, req)
    with pytest.raises(InvalidRequest, match="refiner_switch"):
        GenerationRequest(prompt="x", refiner="r", refiner_switch=1.0)
    with pytest.raises(InvalidRequest, match="denoising_end"):
        Stage(end=1.5)


def test_single_file_sdxl_equals_the_folder(data_dir: Path, tiny_sdxl_single_file: Path, tiny_sdxl_engine) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.loading import load_engine

    engine = load_engine(str(tiny_sdxl_single_file), device="cpu")
    try:
        for part in ("unet_model", "vae", "text_encoder", "text_encoder_2"):
            ours, folder = getattr(engine.components, part).state_dict(), getattr(tiny_sdxl_engine.components, part).state_dict()
            assert set(ours) == set(folder), part
            assert all(torch.equal(ours[k], folder[k]) for k in folder), part
        req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=2, width=64, height=64, seed=5)
        a = run_loop(engine.components, req).images
        b = run_loop(tiny_sdxl_engine.components, req).images
    finally:
        engine.close()
    assert engine.info.capabilities.family == "sdxl"
    diff = float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
    assert diff <= 1e-4, diff


def test_single_file_refiner_equals_the_folder(  # type: ignore[no-untyped-def]
    data_dir: Path, tiny_sdxl_refiner: Path, refiner_engine, tmp_path: Path
) -> None:
    from heyim_desktop.core.loading import load_engine
    from ldm_layout import write_sdxl_single_file

    file = write_sdxl_single_file(tiny_sdxl_refiner, tmp_path / "refiner.safetensors")
    engine = load_engine(str(file), device="cpu")
    try:
        assert engine.info.capabilities.family == "sdxl-refiner"
        req = GenerationRequest(prompt="a fox", steps=2, width=64, height=64, seed=5, init_image=_init_image())
        diff = np.abs(run_loop(engine.components, req).images - run_loop(refiner_engine.components, req).images).max()
        assert float(diff) <= 1e-4, diff
    finally:
        engine.close()


def test_fp16_vae_overflow_is_decoded_again_in_fp32(tiny_sdxl: Path, caplog: pytest.LogCaptureFixture) -> None:
    from heyim_desktop.core.model_folder import check_diffusers_folder
    from heyim_desktop.core.sdxl import SDXLComponents, vae_dtype

    assert vae_dtype(torch.float16, {"force_upcast": True}) == torch.float32
    assert vae_dtype(torch.float16, {"force_upcast": False}) == torch.float16
    assert vae_dtype(torch.float32, {"force_upcast": True}) == torch.float32
    components = SDXLComponents(tiny_sdxl, torch.device("cpu"), torch.float32, check_diffusers_folder(tiny_sdxl))
    latents = torch.randn(1, 4, 8, 8, generator=_gen(0))
    expected = components.vae_decode(latents)
    vae = components.vae
    real_decode = vae.decode

    def overflowing(z: torch.Tensor, return_dict: bool = True):  # type: ignore[no-untyped-def]
        if z.dtype == torch.float16:  # what SDXL's VAE does in fp16 on real images
            return (torch.full((1, 3, 64, 64), float("nan")),)
        return real_decode(z, return_dict=return_dict)

    vae.to(torch.float16)
    vae.decode = overflowing
    with caplog.at_level(logging.WARNING, logger="heyim_desktop.core.sdxl"):
        decoded = components.vae_decode(latents.half())
    assert torch.isfinite(decoded).all()
    assert next(vae.parameters()).dtype == torch.float32
    assert "decoding again in fp32" in caplog.text
    # fp16 weights rounded on the way: close to, not exactly, the fp32 decode
    assert (decoded - expected).abs().max() < 0.05


@pytest.mark.slow
def test_shipped_sdxl_configs_build_the_real_architectures(data_dir: Path) -> None:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    from heyim_desktop.core.checkpoint import profile_config_dir

    base, refiner = profile_config_dir("sdxl"), profile_config_dir("sdxl-refiner")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        refiner_unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(refiner / "unet"))
        big_g = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(base / "text_encoder_2", local_files_only=True))
    assert 2.56e9 < sum(p.numel() for p in unet.parameters()) < 2.57e9  # SDXL base UNet: 2.567B
    assert 2.25e9 < sum(p.numel() for p in refiner_unet.parameters()) < 2.27e9  # refiner UNet: 2.26B
    assert 694e6 < sum(p.numel() for p in big_g.parameters()) < 695e6  # OpenCLIP bigG text tower
    tok_2 = CLIPTokenizer.from_pretrained(base / "tokenizer_2", local_files_only=True)
    ids = tok_2("a photo of a cat", padding="max_length", max_length=10).input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, 0]  # SDXL's second tokenizer pads with "!"
    assert not (refiner / "text_encoder").exists() and (refiner / "tokenizer_2" / "merges.txt").is_file()


# -- hires fix on SDXL: our job equals diffusers' SDXL txt2img -> our upscale -> diffusers' SDXL img2img ----

@pytest.mark.parametrize(("upscaler", "scale", "scheduler"), [("Lanczos", 1.5, "Euler a"), ("Latent", 2.0, "DPM++ 2M")])
def test_hires_fix_on_sdxl_equals_the_three_steps(tiny_sdxl_engine, xl_pipe, xl_img2img,  # type: ignore[no-untyped-def]
                                                  upscaler: str, scale: float, scheduler: str) -> None:
    from heyim_desktop.core.pipeline import run_hires, upscale_latents
    from heyim_desktop.core.request import HiresFix
    from heyim_desktop.core.upscale import upscale_image

    hires = HiresFix(scale=scale, upscaler=upscaler, steps=3, denoising_strength=0.6)
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=6.0, seed=13,
                            width=64, height=64, scheduler=scheduler, hires=hires)
    components = tiny_sdxl_engine.components
    ours = run_hires(components, req)
    side = int(64 * scale)
    assert ours.images.shape == (1, side, side, 3) and ours.first_pass is None
    latent = upscaler.startswith("Latent")
    for pipe in (xl_pipe, xl_img2img):
        pipe.scheduler = build_scheduler(scheduler, components.scheduler_config)
    first = xl_pipe("a red fox", negative_prompt="blurry", num_inference_steps=4, guidance_scale=6.0, width=64,
                    height=64, generator=_gen(13), output_type="latent" if latent else "pil").images
    init = upscale_latents(first, (side // 8, side // 8), upscaler) if latent else upscale_image(first[0], size=(side, side)).image
    ref = xl_img2img("a red fox", negative_prompt="blurry", image=init, strength=0.6, num_inference_steps=3,
                     guidance_scale=6.0, generator=_gen(13), output_type="np").images
    assert ref.shape == ours.images.shape
    assert np.abs(ours.images - ref).max() <= TOL
    if not latent:  # the second pass changed the upscaled picture: equal to it would be no refinement at all
        assert np.abs(ours.images[0] - np.asarray(init, dtype=np.float32) / 255.0).max() > 1e-2
