"""The shared loop against diffusers' own pipelines on the same tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.images import fit_to_size
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress
from heyim_desktop.core.schedulers import SCHEDULER_NAMES, build_scheduler

TOL = 1e-4


@pytest.fixture(scope="module")
def sd_pipe(tiny_model: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def img2img_pipe(sd_pipe):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**sd_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _init_image() -> Image.Image:
    rng = np.random.RandomState(3)
    return Image.fromarray((rng.rand(90, 120, 3) * 255).astype(np.uint8))


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_txt2img_matches_diffusers(tiny_engine, sd_pipe, scheduler: str) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(
        prompt="a red fox", negative_prompt="blurry", steps=4, guidance=7.0, seed=42,
        width=64, height=64, scheduler=scheduler,
    )
    ours = run_loop(tiny_engine.components, req).images
    sd_pipe.scheduler = build_scheduler(scheduler, tiny_engine.components.scheduler_config)
    ref = sd_pipe(
        "a red fox", negative_prompt="blurry", num_inference_steps=4, guidance_scale=7.0, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(42), output_type="np",
    ).images
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert np.abs(ours - ref).max() <= TOL


def test_txt2img_without_guidance_matches_diffusers(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a cat", steps=3, guidance=1.0, seed=9, width=72, height=64, scheduler="Euler")
    ours = run_loop(tiny_engine.components, req).images
    sd_pipe.scheduler = build_scheduler("Euler", tiny_engine.components.scheduler_config)
    ref = sd_pipe("a cat", num_inference_steps=3, guidance_scale=1.0, height=64, width=72,
                  generator=torch.Generator("cpu").manual_seed(9), output_type="np").images
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize(("scheduler", "strength"), [("PNDM", 0.6), ("DPM++ 2M", 0.8), ("Euler a", 1.0), ("DDIM", 0.3)])
def test_img2img_matches_diffusers(tiny_engine, img2img_pipe, scheduler: str, strength: float) -> None:  # type: ignore[no-untyped-def]
    init = _init_image()
    req = GenerationRequest(
        prompt="a red fox", steps=10, guidance=6.0, seed=7, width=64, height=64,
        scheduler=scheduler, init_image=init, strength=strength,
    )
    ours = run_loop(tiny_engine.components, req).images
    img2img_pipe.scheduler = build_scheduler(scheduler, tiny_engine.components.scheduler_config)
    ref = img2img_pipe(
        "a red fox", image=fit_to_size(init, 64, 64), strength=strength, num_inference_steps=10,
        guidance_scale=6.0 + 1.5, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
    ).images
    assert np.abs(ours - ref).max() <= TOL


def test_count_uses_one_seed_per_image(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a cat", steps=3, seed=5, width=64, height=64, count=2, scheduler="Euler a")
    out = run_loop(tiny_engine.components, req)
    assert out.seeds == [5, 6]
    sd_pipe.scheduler = build_scheduler("Euler a", tiny_engine.components.scheduler_config)
    ref = sd_pipe("a cat", num_inference_steps=3, guidance_scale=7.5, height=64, width=64, num_images_per_prompt=2,
                  generator=[torch.Generator("cpu").manual_seed(s) for s in (5, 6)], output_type="np").images
    assert np.abs(out.images - ref).max() <= TOL
    # The second image alone, from its own seed, is the same image.
    alone = run_loop(tiny_engine.components, req.replace(seed=6, count=1)).images
    assert np.abs(alone[0] - out.images[1]).max() <= TOL


def test_same_seed_same_image_other_seed_other_image(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a tree", steps=3, seed=123, width=64, height=64)
    a = run_loop(tiny_engine.components, req).images
    b = run_loop(tiny_engine.components, req).images
    c = run_loop(tiny_engine.components, req.replace(seed=124)).images
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.01


def test_progress_reports_every_step_with_throttled_previews(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[Progress] = []
    req = GenerationRequest(prompt="a tree", steps=6, seed=1, width=64, height=64)
    run_loop(tiny_engine.components, req, progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(p.total == 6 for p in seen)
    assert all(b.elapsed >= a.elapsed for a, b in zip(seen, seen[1:]))
    first = seen[0].preview
    assert first is not None and first.dtype == np.uint8 and first.shape == (8, 8, 3)
    previews = [p for p in seen if p.preview is not None]
    assert 1 <= len(previews) <= len(seen)


def test_cancel_mid_run_stops_within_a_step_and_decodes_nothing(tiny_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    token = CancelToken()
    steps: list[int] = []
    decoded: list[int] = []
    comps = tiny_engine.components
    original = comps.vae_decode
    monkeypatch.setattr(comps, "vae_decode", lambda z: decoded.append(1) or original(z))

    def on_progress(p: Progress) -> None:
        steps.append(p.step)
        if p.step == 2:
            token.cancel()

    req = GenerationRequest(prompt="a tree", steps=10, seed=1, width=64, height=64)
    with pytest.raises(Cancelled):
        run_loop(comps, req, progress=on_progress, cancel=token)
    assert steps == [1, 2]
    assert decoded == []


def test_long_prompt_is_truncated_with_a_warning(tiny_engine, caplog) -> None:  # type: ignore[no-untyped-def]
    # The PyTorch engine reads 8 chunks of 75 tokens; what lies beyond is cut.
    words = " ".join(["fox"] * 600) + " zebra"
    req = GenerationRequest(prompt=words, steps=1, seed=1, width=64, height=64)
    out = run_loop(tiny_engine.components, req)
    assert out.truncated_prompt is not None and "zebra" in out.truncated_prompt
    assert any("zebra" in w for w in out.warnings)
    assert "longer than 600 tokens" in caplog.text
    short = run_loop(tiny_engine.components, req.replace(prompt="a fox"))
    assert short.truncated_prompt is None and short.warnings == []


def test_unresolved_seed_is_refused(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="resolved seed"):
        run_loop(tiny_engine.components, GenerationRequest(prompt="a"))


def test_engine_generate_returns_pil_images_and_timings(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    res = tiny_engine.generate(GenerationRequest(prompt="a fox", steps=2, width=64, height=96, count=2))
    assert res.request.seed is not None
    assert [img.seed for img in res.images] == res.request.image_seeds()
    assert all(img.image.size == (64, 96) and img.image.mode == "RGB" for img in res.images)
    for stage in ("text_encode", "denoise", "decode", "total", "per_step"):
        assert res.timings[stage] >= 0
    assert res.model_name == "HeyIm demo (tiny random model)"
    assert tiny_engine.default_size == (256, 256)
