"""ControlNet on the shared loop, against diffusers' StableDiffusionControlNetPipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.controlnet import ControlUnit, keep_factor, soft_scales
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


def _control(size: int = 64, seed: int = 2) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))


def _pipe(model: Path, nets: list[Path]):  # type: ignore[no-untyped-def]
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    loaded = [ControlNetModel.from_pretrained(p, local_files_only=True) for p in nets]
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        model, controlnet=loaded[0] if len(loaded) == 1 else loaded, safety_checker=None,
        requires_safety_checker=False, local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _compare(engine, model: Path, units: list[ControlUnit], *, guess: bool = False, guidance: float = 6.0,  # type: ignore[no-untyped-def]
             scheduler: str = "DPM++ 2M", size: int = 64, steps: int = 5) -> float:
    req = GenerationRequest(
        prompt="a red fox", negative_prompt="blurry", steps=steps, guidance=guidance, seed=11, width=size, height=size,
        scheduler=scheduler, controlnets=tuple(units),
    )
    ours = run_loop(engine.components, req).images
    pipe = _pipe(model, [Path(u.model) for u in units])
    pipe.scheduler = build_scheduler(scheduler, engine.components.scheduler_config)
    many = len(units) > 1
    ref = pipe(
        "a red fox", negative_prompt="blurry", image=[u.image for u in units] if many else units[0].image,
        height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
        controlnet_conditioning_scale=[u.weight for u in units] if many else units[0].weight,
        control_guidance_start=[u.start for u in units] if many else units[0].start,
        control_guidance_end=[u.end for u in units] if many else units[0].end,
        guess_mode=guess, generator=torch.Generator("cpu").manual_seed(11), output_type="np",
    ).images
    assert ours.shape == ref.shape == (1, size, size, 3)
    diff = float(np.abs(ours - ref).max())
    assert diff <= TOL
    return diff


def _unit(path: Path, **kw) -> ControlUnit:  # type: ignore[no-untyped-def]
    kw.setdefault("image", _control())
    return ControlUnit(model=str(path), **kw)


def test_one_controlnet_equals_diffusers(tiny_engine, tiny_model: Path, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    _compare(tiny_engine, tiny_model, [_unit(tiny_controlnet, weight=0.8)])


def test_controlnet_changes_the_image(tiny_engine, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    base = GenerationRequest(prompt="a red fox", steps=3, seed=11, width=64, height=64)
    plain = run_loop(tiny_engine.components, base).images
    guided = run_loop(tiny_engine.components, base.replace(controlnets=(_unit(tiny_controlnet),))).images
    assert np.abs(plain - guided).max() > 1e-3


def test_two_controlnets_with_weights_and_start_end(tiny_engine, tiny_model: Path, tiny_controlnet: Path,  # type: ignore[no-untyped-def]
                                                    tiny_controlnet_b: Path) -> None:
    units = [
        _unit(tiny_controlnet, weight=1.2, start=0.0, end=0.6),
        _unit(tiny_controlnet_b, image=_control(seed=9), weight=0.5, start=0.2, end=1.0),
    ]
    _compare(tiny_engine, tiny_model, units, scheduler="Euler a", steps=6)


def test_guess_mode_is_controlnet_is_more_important(tiny_engine, tiny_model: Path, tiny_controlnet: Path,  # type: ignore[no-untyped-def]
                                                    tiny_controlnet_b: Path) -> None:
    _compare(tiny_engine, tiny_model, [_unit(tiny_controlnet, mode="controlnet", weight=0.9)], guess=True)
    units = [_unit(tiny_controlnet, mode="controlnet"), _unit(tiny_controlnet_b, mode="ControlNet is more important", end=0.5)]
    _compare(tiny_engine, tiny_model, units, guess=True)


def test_without_guidance(tiny_engine, tiny_model: Path, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    _compare(tiny_engine, tiny_model, [_unit(tiny_controlnet)], guidance=1.0, scheduler="Euler")


def test_control_image_of_another_size_is_resized_like_diffusers(tiny_engine, tiny_model: Path, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    _compare(tiny_engine, tiny_model, [_unit(tiny_controlnet, image=_control(96).crop((0, 0, 96, 80)), resize_mode="Just Resize")])


def test_prompt_is_more_important_uses_the_extensions_soft_weights(tiny_engine, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.conditioning import UNetCall
    from heyim_desktop.core.controlnet import ControlNetExtension

    comps = tiny_engine.components
    req = GenerationRequest(prompt="fox", seed=1, width=64, height=64, steps=2,
                            controlnets=(_unit(tiny_controlnet, weight=0.7),))
    soft = req.replace(controlnets=(_unit(tiny_controlnet, weight=0.7, mode="prompt"),))

    @torch.inference_mode()
    def residuals(r: GenerationRequest):  # type: ignore[no-untyped-def]
        ext = ControlNetExtension(r, comps)
        from heyim_desktop.core.guidance import ClassifierFree

        prompts = comps.encode_prompts(r, with_negative=True)
        guid = ClassifierFree(type(prompts.cond).cat([prompts.uncond, prompts.cond]), 7.0)
        state = type("S", (), {"timesteps": torch.arange(2), "step_index": 0, "guidance": guid})()
        call = UNetCall(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(10), guid.text)
        ext.before_unet(state, call)  # type: ignore[arg-type]
        return call

    a, b = residuals(req), residuals(soft)
    n = len(a.down_residuals) + 1
    scales = soft_scales(n)
    for ra, rb, f in zip(a.down_residuals, b.down_residuals, scales):
        assert torch.allclose(ra * f, rb, atol=1e-6)
    assert torch.allclose(a.mid_residual * scales[-1], b.mid_residual, atol=1e-6)
    assert scales[-1] == pytest.approx(0.825 ** (13 - n))


def test_keep_rule_follows_diffusers() -> None:
    assert [keep_factor(i, 10, 0.2, 0.6) for i in range(10)] == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert [keep_factor(i, 4, 0.0, 1.0) for i in range(4)] == [1, 1, 1, 1]


def test_units_are_validated() -> None:
    with pytest.raises(InvalidRequest, match="guidance_start"):
        ControlUnit(model="x", start=0.8, end=0.2)
    with pytest.raises(InvalidRequest, match="weight"):
        ControlUnit(model="x", weight=3)
    with pytest.raises(InvalidRequest, match="control_mode"):
        ControlUnit(model="x", mode="loud")
    with pytest.raises(InvalidRequest, match="unknown preprocessor"):
        ControlUnit(model="x", preprocessor="magic")
    assert ControlUnit(model="x", preprocessor="inpaint_only+lama").annotator == ""  # LaMa's file too
    assert ControlUnit(model="x", preprocessor="depth_midas").annotator == ""  # its folder comes from the library
    assert ControlUnit(model="x", preprocessor="openpose").annotator == ""  # and openpose's file
    assert ControlUnit(model="x", mode=2).mode == "controlnet"
    assert ControlUnit(model="x", mode="My prompt is more important").mode == "prompt"


def test_missing_control_image_is_a_clear_error(tiny_engine, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="fox", seed=1, width=64, height=64, steps=2,
                            controlnets=(ControlUnit(model=str(tiny_controlnet)),))
    with pytest.raises(InvalidRequest, match="no control image"):
        run_loop(tiny_engine.components, req)


def test_controlnet_for_another_family_is_refused(tiny_engine, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from controlnet_layout import build_tiny_controlnet

    folder = build_tiny_controlnet(tiny_model, tmp_path / "cn", seed=1)
    config = json.loads((folder / "config.json").read_text())
    config["cross_attention_dim"] = 1024
    from diffusers import ControlNetModel

    ControlNetModel.from_config(config).save_pretrained(tmp_path / "sd2-cn", safe_serialization=True)
    req = GenerationRequest(prompt="fox", seed=1, width=64, height=64, steps=2,
                            controlnets=(_unit(tmp_path / "sd2-cn"),))
    with pytest.raises(ModelError, match=r"SD 2.x .*1024.*loaded model is custom \(32\)"):
        run_loop(tiny_engine.components, req)


def test_single_file_and_bad_files(tiny_engine, tiny_model: Path, tiny_controlnet: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from controlnet_layout import write_ldm_single_file, write_single_file

    single = write_single_file(tiny_controlnet, tmp_path / "tiny-cn.safetensors")
    original = write_ldm_single_file(tiny_controlnet, tmp_path / "tiny-cn-ldm.safetensors")
    req = GenerationRequest(prompt="fox", seed=3, width=64, height=64, steps=2)
    b = run_loop(tiny_engine.components, req.replace(controlnets=(_unit(tiny_controlnet),))).images
    for path in (single, original):
        a = run_loop(tiny_engine.components, req.replace(controlnets=(_unit(path),))).images
        assert np.abs(a - b).max() <= TOL, path.name
    bare = write_single_file(tiny_controlnet, tmp_path / "no-config.safetensors", sidecar=False)
    with pytest.raises(ModelError, match="ships no .* config.*beside it"):
        run_loop(tiny_engine.components, req.replace(controlnets=(_unit(bare),)))
    pickle = tmp_path / "cn.pth"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelError, match="pickle"):
        run_loop(tiny_engine.components, req.replace(controlnets=(_unit(pickle),)))
    with pytest.raises(ModelError, match="not found"):
        run_loop(tiny_engine.components, req.replace(controlnets=(_unit(tmp_path / "nope.safetensors"),)))


def test_only_masked_inpainting_crops_the_control_image_with_the_input(tiny_engine, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import ImageOps

    from heyim_desktop.core.controlnet import control_images
    from heyim_desktop.core.inpaint import plan_edit
    from heyim_desktop.core.masking import InpaintSpec, crop_region, prepare_mask

    canvas = _control(96, seed=4).resize((96, 64))
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 60:84] = 255
    spec = InpaintSpec(mask=Image.fromarray(mask, mode="L"), blur=0, only_masked=True, padding=4)
    half = _control(48, seed=5).resize((48, 32))  # the control image at half the input's size
    own = ControlUnit(model=str(tiny_controlnet), image=half, resize_mode="Just Resize")
    shared = ControlUnit(model=str(tiny_controlnet))  # uses the input image
    req = GenerationRequest(prompt="a fox", seed=3, steps=2, width=64, height=64, init_image=canvas, strength=0.9,
                            inpaint=spec, controlnets=(own, shared))
    loop = plan_edit(req).request
    box = crop_region(prepare_mask(spec, 96, 64), 4, (64, 64))
    lanczos = Image.Resampling.LANCZOS
    expected = ImageOps.pad(half.resize((96, 64), lanczos).crop(box), (64, 64), method=lanczos)
    assert box != (0, 0, 96, 64) and loop.controlnets[0].image.size == (64, 64)
    assert np.array_equal(np.asarray(loop.controlnets[0].image), np.asarray(expected))
    assert loop.controlnets[1].image is None  # its map is made from the cropped input, as before
    maps = control_images(loop)
    assert np.allclose(maps[1], np.asarray(loop.init_image.convert("RGB"), np.float32) / 255.0)
    # Whole-picture inpainting leaves the control image as it was (fitted at generation).
    whole = plan_edit(req.replace(inpaint=InpaintSpec(mask=spec.mask, blur=0))).request
    assert whole.controlnets[0].image is half
    out = tiny_engine.generate(req)
    assert out.images[0].image.size == (96, 64)
