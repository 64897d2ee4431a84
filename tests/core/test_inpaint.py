"""Inpainting and outpainting on the shared loop, against diffusers' inpaint pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.codec import request_from_data, request_to_data
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.inpaint import plan_edit
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.masking import Extend, InpaintSpec, crop_region
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
def inpaint_engine(tiny_inpaint_model: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(tiny_inpaint_model, device="cpu")
    yield engine
    engine.close()


def _pipe(folder: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _compare(engine, folder: Path, scheduler: str, strength: float, guidance: float = 6.0) -> None:  # type: ignore[no-untyped-def]
    init, mask = _image(), _mask()
    req = GenerationRequest(
        prompt="a red fox", negative_prompt="blurry", steps=5, guidance=guidance, seed=11, width=64, height=64,
        scheduler=scheduler, init_image=init, strength=strength, guidance_boost=0.0,
        inpaint=InpaintSpec(mask=mask, blur=0),
    )
    ours = run_loop(engine.components, req).images
    pipe = _pipe(folder)
    pipe.scheduler = build_scheduler(scheduler, engine.components.scheduler_config)
    ref = pipe(
        "a red fox", negative_prompt="blurry", image=init, mask_image=mask, height=64, width=64, strength=strength,
        num_inference_steps=5, guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(11), output_type="np",
    ).images
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize(("scheduler", "strength"), [("DPM++ 2M", 1.0), ("Euler a", 0.75), ("DDIM", 0.6)])
def test_ordinary_model_blends_like_diffusers(tiny_engine, tiny_model: Path, scheduler: str, strength: float) -> None:  # type: ignore[no-untyped-def]
    assert tiny_engine.info.capabilities.inpaint == "blend"
    _compare(tiny_engine, tiny_model, scheduler, strength)


@pytest.mark.parametrize(("scheduler", "strength"), [("DPM++ 2M", 1.0), ("Euler a", 0.8)])
def test_inpainting_model_concats_like_diffusers(inpaint_engine, tiny_inpaint_model: Path, scheduler: str, strength: float) -> None:  # type: ignore[no-untyped-def]
    assert inpaint_engine.info.capabilities.inpaint == "concat"
    _compare(inpaint_engine, tiny_inpaint_model, scheduler, strength)


def test_inpainting_model_without_guidance(inpaint_engine, tiny_inpaint_model: Path) -> None:  # type: ignore[no-untyped-def]
    _compare(inpaint_engine, tiny_inpaint_model, "Euler", 1.0, guidance=1.0)


def _kept(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) == 0


def test_paste_back_keeps_unmasked_pixels_exactly(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init, mask = _image(), _mask()
    req = GenerationRequest(prompt="a fox", steps=3, seed=2, width=64, height=64, init_image=init, strength=1.0,
                            inpaint=InpaintSpec(mask=mask, blur=0))
    out = np.asarray(tiny_engine.generate(req).images[0].image)
    keep = _kept(mask)
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])
    # With blur, pixels far from the mask still stay exactly as they were.
    blurred = np.asarray(tiny_engine.generate(req.replace(inpaint=InpaintSpec(mask=mask, blur=4))).images[0].image)
    far = np.ones((64, 64), bool)
    far[4:60, 0:52] = False
    assert np.array_equal(blurred[far], np.asarray(init)[far])


def test_paste_back_off_changes_the_whole_image(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init, mask = _image(), _mask()
    req = GenerationRequest(prompt="a fox", steps=3, seed=2, width=64, height=64, init_image=init, strength=1.0,
                            inpaint=InpaintSpec(mask=mask, blur=0, keep_unmasked=False))
    out = np.asarray(tiny_engine.generate(req).images[0].image)
    assert not np.array_equal(out[_kept(mask)], np.asarray(init)[_kept(mask)])


def test_outpaint_grows_the_canvas_and_keeps_the_original(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init = _image()
    req = GenerationRequest(prompt="a fox", steps=3, seed=4, width=64, height=64, init_image=init, strength=1.0,
                            extend=Extend(left=16, top=0, right=32, bottom=8))
    result = tiny_engine.generate(req)
    out = np.asarray(result.images[0].image)
    assert out.shape == (72, 112, 3)
    assert (result.request.width, result.request.height) == (112, 72)
    assert np.array_equal(out[0:64, 16:80], np.asarray(init))
    assert not np.array_equal(out[:, 80:], np.zeros_like(out[:, 80:]))


def test_only_masked_repaints_a_crop_at_the_model_size(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init = _image(128)
    arr = np.zeros((128, 128), np.uint8)
    arr[70:90, 80:100] = 255
    mask = Image.fromarray(arr, mode="L")
    req = GenerationRequest(prompt="a fox", steps=3, seed=4, width=64, height=64, init_image=init, strength=0.9,
                            inpaint=InpaintSpec(mask=mask, blur=0, only_masked=True, padding=8))
    plan = plan_edit(req)
    assert plan.request.init_image.size == (64, 64)
    out = np.asarray(tiny_engine.generate(req).images[0].image)
    assert out.shape == (128, 128, 3)
    keep = arr == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])


def test_crop_region_keeps_the_target_aspect_and_stays_inside() -> None:
    mask = np.zeros((100, 200), np.float32)
    mask[40:50, 150:160] = 1
    x1, y1, x2, y2 = crop_region(mask, 4, (64, 32))
    assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 100
    assert abs((x2 - x1) / (y2 - y1) - 2.0) < 0.1
    assert x1 <= 146 and x2 >= 164 and y1 <= 36 and y2 >= 54


@pytest.mark.parametrize("fill", ["fill", "latent noise", "latent nothing"])
def test_fill_modes_change_the_repainted_area(tiny_engine, fill: str) -> None:  # type: ignore[no-untyped-def]
    init, mask = _image(), _mask()
    base = GenerationRequest(prompt="a fox", steps=3, seed=2, width=64, height=64, init_image=init, strength=0.5,
                             inpaint=InpaintSpec(mask=mask, blur=0))
    original = np.asarray(tiny_engine.generate(base).images[0].image)
    other = np.asarray(tiny_engine.generate(base.replace(inpaint=InpaintSpec(mask=mask, blur=0, fill=fill))).images[0].image)
    keep = _kept(mask)
    assert np.array_equal(other[keep], original[keep])
    assert not np.array_equal(other[~keep], original[~keep])


def test_masks_of_another_size_are_resized_and_inverted(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init = _image()
    big = _mask().resize((128, 128), Image.Resampling.NEAREST)
    req = GenerationRequest(prompt="a fox", steps=2, seed=2, width=64, height=64, init_image=init, strength=1.0,
                            inpaint=InpaintSpec(mask=big, blur=0, invert=True))
    out = np.asarray(tiny_engine.generate(req).images[0].image)
    inside = np.zeros((64, 64), bool)  # inverted: the painted area (away from its resampled edge) is kept
    inside[19:45, 11:37] = True
    assert np.array_equal(out[inside], np.asarray(init)[inside])


def test_bad_masks_give_clear_errors(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init = _image()
    black = Image.new("L", (64, 64), 0)
    with pytest.raises(InvalidRequest, match="mask is empty"):
        tiny_engine.generate(GenerationRequest(prompt="x", steps=2, seed=1, width=64, height=64, init_image=init,
                                               inpaint=InpaintSpec(mask=black)))
    white = Image.new("L", (64, 64), 255)
    out = tiny_engine.generate(GenerationRequest(prompt="x", steps=2, seed=1, width=64, height=64, init_image=init,
                                                 strength=1.0, inpaint=InpaintSpec(mask=white, blur=0)))
    assert out.images[0].image.size == (64, 64)
    with pytest.raises(InvalidRequest, match="need an input image"):
        GenerationRequest(prompt="x", inpaint=InpaintSpec(mask=white))
    with pytest.raises(InvalidRequest, match="inpainting_fill"):
        InpaintSpec(mask=white, fill="bogus")
    with pytest.raises(InvalidRequest, match="extend.left"):
        Extend(left=7)
    with pytest.raises(InvalidRequest, match="larger than"):
        GenerationRequest(prompt="x", width=2000, height=64, init_image=init, extend=Extend(right=64))


def test_codec_round_trips_masks_and_refuses_non_images() -> None:
    init, mask = _image(), _mask()
    req = GenerationRequest(prompt="x", seed=1, width=64, height=64, init_image=init,
                            inpaint=InpaintSpec(mask=mask, blur=2, fill="latent noise", only_masked=True, padding=16),
                            extend=Extend(right=8))
    back = request_from_data(request_to_data(req))
    assert back.inpaint is not None and back.extend == Extend(right=8)
    assert (back.inpaint.blur, back.inpaint.fill, back.inpaint.only_masked, back.inpaint.padding) == (2, "latent noise", True, 16)
    assert np.array_equal(np.asarray(back.inpaint.mask.convert("L")), np.asarray(mask))
    data = request_to_data(req)
    data["inpaint"]["mask"] = "bm90IGFuIGltYWdl"  # "not an image"
    with pytest.raises(InvalidRequest) as info:
        request_from_data(data)
    assert info.value.field == "mask"


def test_the_blend_path_encodes_only_the_input_image(tiny_engine, inpaint_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The masked image's latents feed only an inpainting UNet: the blend path skips that VAE encode
    (it still draws diffusers' numbers for it; the Euler a comparisons above check the stream)."""
    from heyim_desktop.core.inpaint import encode_inpaint_image

    req = GenerationRequest(prompt="x", steps=2, seed=1, width=64, height=64, init_image=_image(),
                            inpaint=InpaintSpec(mask=_mask(), blur=0))
    for engine, expected in ((tiny_engine, 1), (inpaint_engine, 2)):
        comps = engine.components
        calls: list[int] = []
        real = comps.vae_encode
        monkeypatch.setattr(comps, "vae_encode", lambda images, real=real, calls=calls: calls.append(1) or real(images))
        cond = encode_inpaint_image(comps, req)
        assert len(calls) == expected and (cond.masked_moments is not None) == (expected == 2)


def test_outpaint_with_a_painted_mask_repaints_both(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    init, mask = _image(), _mask()
    req = GenerationRequest(prompt="a fox", steps=3, seed=4, width=64, height=64, init_image=init, strength=1.0,
                            inpaint=InpaintSpec(mask=mask, blur=0), extend=Extend(right=16))
    out = np.asarray(tiny_engine.generate(req).images[0].image)
    assert out.shape == (64, 80, 3)
    original = out[:, :64]
    keep = _kept(mask)  # the seam fades in over the new border only, so all of this stays
    assert np.array_equal(original[keep], np.asarray(init)[keep])
    assert not np.array_equal(original[16:48, 8:40], np.asarray(init)[16:48, 8:40])  # the painted part changed


def test_single_file_inpainting_checkpoint_loads_as_an_inpainting_model(  # type: ignore[no-untyped-def]
    inpaint_engine, tiny_inpaint_model: Path, tmp_path: Path
) -> None:
    """An A1111-layout inpainting checkpoint (9-channel UNet input) runs the concat path, as its folder does."""
    from heyim_desktop.core.checkpoint import detect_architecture
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.model_files import read_safetensors_header
    from ldm_layout import write_single_file

    file = write_single_file(tiny_inpaint_model, tmp_path / "tiny-inpainting.safetensors")
    arch = detect_architecture(read_safetensors_header(file), file)
    assert arch.supported and arch.unet_in_channels == 9 and arch.profile == "demo"
    engine = load_engine(str(file), device="cpu")
    try:
        assert engine.info.capabilities.inpaint == "concat"
        req = GenerationRequest(prompt="a fox", steps=2, seed=3, width=64, height=64, init_image=_image(),
                                strength=1.0, inpaint=InpaintSpec(mask=_mask(), blur=0))
        ours = run_loop(engine.components, req).images
    finally:
        engine.close()
    folder = run_loop(inpaint_engine.components, req).images
    assert np.abs(ours - folder).max() <= TOL
