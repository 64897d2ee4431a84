"""inpaint_only+lama: LaMa (spandrel, safetensors only) fills the mask for the map and the starting noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.control_preprocess import (
    LAMA,
    annotator_folder,
    canonical,
    control_array,
    detect,
    network_preprocessors,
)
from heyim_desktop.core.controlnet import ControlUnit, control_images
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.lama_preprocess import check_file, find_weights, lama_fill
from heyim_desktop.core.masking import InpaintSpec, prepare_mask
from heyim_desktop.core.request import GenerationRequest


def _photo(w: int, h: int, seed: int = 5) -> np.ndarray:
    rng = np.random.RandomState(seed)
    arr = (rng.rand(h, w, 3) * 255).astype(np.uint8)
    arr[10:30, 20:60] = (200, 60, 40)
    return arr


def _mask(w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[12:40, 24:70] = 1.0
    mask[40:44, 24:70] = 0.4  # a soft edge: blended, not filled
    return mask


def _spandrel(path: Path):  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    from heyim_desktop.core.upscale import import_spandrel

    return import_spandrel().ModelLoader(device="cpu").load_from_state_dict(load_file(str(path))).eval()


def test_fill_equals_spandrels_lama_on_the_extensions_input(tiny_lama: Path) -> None:
    import cv2

    rgb, mask = _photo(100, 60), _mask(100, 60)
    out = lama_fill(rgb, mask, tiny_lama)
    # The extension's steps, written out: short side 256 (cubic up), edge-padded to 64, binary mask.
    alpha = (mask * 255).round().astype(np.uint8)
    both = cv2.resize(np.dstack([rgb, alpha]), (427, 256), interpolation=cv2.INTER_CUBIC)
    padded = np.pad(both, [[0, 0], [0, 448 - 427], [0, 0]], mode="edge")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255.0
    m = (x[:, 3:] > 0.5).float()
    model = _spandrel(tiny_lama)
    # big-LaMa has no learnable spatial transforms, the only callers of torchvision's rotate (a stand-in here).
    assert not any(type(mod).__name__ == "LearnableSpatialTransformWrapper" for mod in model.model.modules())
    with torch.inference_mode():
        y = model(x[:, :3] * (1 - m), m)
    predicted = (y[0].permute(1, 2, 0).numpy() * 255.0).clip(0, 255).astype(np.uint8)[:, :427]
    predicted = cv2.resize(predicted, (100, 60), interpolation=cv2.INTER_LINEAR)
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    expected = (predicted.astype(np.float32) * a + rgb.astype(np.float32) * (1 - a)).clip(0, 255).astype(np.uint8)
    assert out.shape == (60, 100, 3) and np.array_equal(out, expected)
    assert np.array_equal(out[mask == 0], rgb[mask == 0])  # the unmasked pixels are the original's
    assert not np.array_equal(out[mask == 1], rgb[mask == 1])
    shown = np.asarray(detect(Image.fromarray(rgb), LAMA, annotator=tiny_lama, mask=mask))
    assert np.array_equal(shown, out)  # /controlnet/detect shows the fill
    unmasked = detect(Image.fromarray(rgb), LAMA, annotator=tiny_lama)  # no mask (the panel's preview): unchanged
    assert np.array_equal(np.asarray(unmasked), rgb)


def test_control_map_is_the_fill_with_minus_one_under_the_mask(tiny_lama: Path) -> None:
    photo = Image.fromarray(_photo(100, 60))
    mask = _mask(64, 64)
    with pytest.raises(InvalidRequest, match="mask"):
        control_array(photo, LAMA, 64, 64, annotator=tiny_lama)
    with pytest.raises(InvalidRequest, match="annotator"):
        control_array(photo, LAMA, 64, 64, mask=mask)
    arr = control_array(photo, LAMA, 64, 64, mask=mask, annotator=tiny_lama)
    from heyim_desktop.core.control_preprocess import fit_control_image

    fitted = np.asarray(fit_control_image(photo, 64, 64, "Crop and Resize"))
    filled = lama_fill(fitted, mask, tiny_lama).astype(np.float32) / 255.0
    assert np.all(arr[mask > 0.5] == -1.0)
    assert np.array_equal(arr[mask <= 0.5], filled[mask <= 0.5])
    # "Resize and Fill": the added borders are masked too, so LaMa outpaints them.
    fill = control_array(photo, LAMA, 64, 64, mask=np.zeros((64, 64), np.float32), annotator=tiny_lama,
                         resize_mode="Resize and Fill")
    assert np.all(fill[:12] == -1.0) and np.all(fill[-12:] == -1.0) and np.all(fill[24:40] >= 0)


def test_listed_only_when_a_lama_file_is_present(tiny_lama: Path, tmp_path: Path) -> None:
    assert canonical("inpaint_only+lama") == LAMA
    other = tmp_path / "annotator" / "other.safetensors"
    other.parent.mkdir()
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(other))
    pickle = tmp_path / "annotator" / "ControlNetLama.pth"
    pickle.write_bytes(b"\x80\x04K\x01.")
    listed = dict((p.name, ok) for p, ok in network_preprocessors([other, pickle]))
    assert listed[LAMA] is False and annotator_folder([other, pickle], LAMA) is None
    assert dict((p.name, ok) for p, ok in network_preprocessors([other, tiny_lama]))[LAMA] is True
    assert annotator_folder([other, tiny_lama], LAMA) == tiny_lama
    renamed = tmp_path / "annotator" / "my-lama.safetensors"
    preferred = tmp_path / "annotator" / "ControlNetLama.safetensors"
    for dest in (renamed, preferred):
        shutil.copyfile(tiny_lama, dest)
    assert find_weights([renamed, tiny_lama, preferred]) == preferred  # ControlNetLama, big-lama, then others
    assert find_weights([renamed]) == renamed


def test_bad_and_missing_files_give_clear_errors(tiny_lama: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from heyim_desktop.core.lama_preprocess import _load

    rgb, mask = _photo(64, 64), _mask(64, 64)
    with pytest.raises(ModelError, match="not found"):
        lama_fill(rgb, mask, tmp_path / "nope.safetensors")
    pickle = tmp_path / "big-lama.safetensors"
    pickle.write_bytes(b"\x80\x04K\x01." + b"\0" * 64)  # a pickle under a safetensors name: never opened
    with pytest.raises(ModelError, match="pickle"):
        check_file(pickle)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(ModelError, match="not a LaMa"):
        lama_fill(rgb, mask, other)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(tiny_lama.read_bytes()[: 1 << 20])
    with pytest.raises(ModelError, match="truncated"):
        check_file(truncated)
    with pytest.raises(InvalidRequest, match="does not match"):
        lama_fill(rgb, mask[:10], tiny_lama)
    state = load_file(str(tiny_lama))
    # A training checkpoint's names (generator.*) with a discriminator tensor: the generator loads.
    ckpt = tmp_path / "ckpt.safetensors"
    named = {k.replace("model.model", "generator.model", 1): v for k, v in state.items()}
    save_file({**named, "discriminator.model0.0.weight": torch.zeros(2, 2)}, str(ckpt))
    ours, theirs = _load(ckpt, "cpu").model.state_dict(), _load(tiny_lama, "cpu").model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Strict: a generator missing a tensor is refused, not run half-random.
    del state["model.model.1.ffc.convl2l.weight"]
    state["generator.model.1.bn_l.running_mean"] = state.pop("model.model.1.bn_l.running_mean")
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(ModelError, match="do not fit|not a LaMa"):
        lama_fill(rgb, mask, broken)


def test_lama_noise_mixes_the_fill_into_the_starting_noise(tiny_engine, tiny_lama: Path,  # type: ignore[no-untyped-def]
                                                           tiny_controlnet: Path) -> None:
    from heyim_desktop.core.conditioning import ImageCond
    from heyim_desktop.core.extensions import LoopState
    from heyim_desktop.core.lama_preprocess import LamaNoise
    from heyim_desktop.core.schedulers import build_scheduler

    comp = tiny_engine.components
    photo = Image.fromarray(_photo(64, 64))
    drawn = Image.fromarray((_mask(64, 64) * 255).astype(np.uint8), mode="L")
    spec = InpaintSpec(mask=drawn, blur=0)
    unit = ControlUnit(model=str(tiny_controlnet), preprocessor=LAMA, annotator=str(tiny_lama))
    req = GenerationRequest(prompt="x", width=64, height=64, steps=4, init_image=photo, strength=0.75,
                            inpaint=spec, controlnets=(unit,))
    filled = lama_fill(np.asarray(photo), prepare_mask(spec, 64, 64), tiny_lama)
    pixels = torch.from_numpy(filled.transpose(2, 0, 1).copy())[None].float() / 127.5 - 1.0
    z = torch.chunk(comp.vae_encode(pixels.to(comp.device, comp.dtype)), 2, dim=1)[0] * comp.scaling_factor
    sched = build_scheduler("Euler", comp.scheduler_config)
    sched.set_timesteps(4)
    a_t = float(sched.alphas_cumprod[-1])
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(z.shape, generator=gen)
    init = torch.randn(z.shape, generator=gen)
    mixed = a_t ** 0.5 * z + (1 - a_t) ** 0.5 * noise

    def state(r: GenerationRequest, init_latents: torch.Tensor | None, with_noise: bool) -> LoopState:
        latents = noise * sched.init_noise_sigma if init_latents is None else sched.add_noise(init, noise, sched.timesteps[:1])
        return LoopState(request=r, components=comp, scheduler=sched, timesteps=sched.timesteps, latents=latents,
                         guidance=None, generators=[], seeds=[1], first_image=0, image=ImageCond(),  # type: ignore[arg-type]
                         init_latents=init_latents, noise=noise.clone() if with_noise else None)

    img2img = state(req, init, True)
    LamaNoise(req, comp).before_loop(img2img)
    assert torch.allclose(img2img.latents, sched.add_noise(init, mixed, sched.timesteps[:1]), atol=1e-5)
    assert img2img.noise is not None and torch.allclose(img2img.noise, mixed, atol=1e-6)
    full = req.replace(strength=1.0)  # inpainting from pure noise: the start is the mixed noise
    pure = state(full, init, True)
    LamaNoise(full, comp).before_loop(pure)
    assert torch.allclose(pure.latents, mixed * sched.init_noise_sigma, atol=1e-5)
    resumed = state(req, init, True)
    resumed.first_step = 2  # the refiner's stage starts from latents: untouched
    before = resumed.latents.clone()
    LamaNoise(req, comp).before_loop(resumed)
    assert torch.equal(resumed.latents, before)
    maps = control_images(req)
    assert np.all(maps[0][prepare_mask(spec, 64, 64) > 0.5] == -1.0)


def test_img2img_inpaint_with_lama_runs_and_is_recorded(tiny_engine, tiny_lama: Path,  # type: ignore[no-untyped-def]
                                                        tiny_controlnet: Path) -> None:
    from heyim_desktop.core.controlnet import infotext_pairs

    photo = Image.fromarray(_photo(64, 64))
    drawn = Image.fromarray((_mask(64, 64) * 255).astype(np.uint8), mode="L")
    unit = ControlUnit(model=str(tiny_controlnet), preprocessor="inpaint_only+lama", annotator=str(tiny_lama))
    req = GenerationRequest(prompt="a fox", width=64, height=64, steps=2, seed=3, init_image=photo, strength=0.8,
                            inpaint=InpaintSpec(mask=drawn, blur=0), controlnets=(unit,))
    lama = tiny_engine.generate(req).images[0].image
    plain = tiny_engine.generate(req.replace(controlnets=(ControlUnit(model=str(tiny_controlnet), preprocessor="inpaint"),)))
    a, b = np.asarray(lama), np.asarray(plain.images[0].image)
    assert a.shape == (64, 64, 3) and not np.array_equal(a, b)  # the fill reaches the picture
    keep = np.asarray(drawn) == 0
    assert np.array_equal(a[keep], np.asarray(photo)[keep])  # kept by the inpainting's own paste-back
    text = dict(infotext_pairs(req))["ControlNet 0"]
    assert text.startswith("Module: inpaint_only+lama, Model: tiny-controlnet [")
    with pytest.raises((InvalidRequest, ModelError), match="annotator"):
        tiny_engine.generate(req.replace(controlnets=(ControlUnit(model=str(tiny_controlnet), preprocessor=LAMA),)))
