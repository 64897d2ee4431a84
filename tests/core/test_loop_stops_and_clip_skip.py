"""AUTOMATIC1111 behaviours of the shared loop: clip skip, interrupt and skip, against diffusers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4


@pytest.fixture(scope="module")
def sd_pipe(tiny_model: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    encoder = pipe.text_encoder
    if not hasattr(encoder, "text_model"):
        # diffusers' clip_skip path still reads text_encoder.text_model.final_layer_norm, which
        # transformers 5 moved onto the model itself: point the old name at the same layer.
        encoder.text_model = SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    return pipe


def _request(**kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a red fox", negative_prompt="blurry", steps=4, guidance=7.0, seed=42,
                                   width=64, height=64, scheduler="DPM++ 2M")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def _diffusers(pipe, *, seed: int = 42, steps: int = 4, clip_skip: int | None = None, **kw):  # type: ignore[no-untyped-def]
    pipe.scheduler = build_scheduler("DPM++ 2M", pipe.scheduler.config)
    args = dict(num_inference_steps=steps, guidance_scale=7.0, height=64, width=64,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw)
    if clip_skip is None:
        return pipe("a red fox", negative_prompt="blurry", **args).images
    # diffusers' pipeline applies clip_skip to the prompt only; AUTOMATIC1111 (and HeyIm) to both
    # prompts. So encode each with diffusers' own encode_prompt and clip_skip, and pass the embeddings.
    def encode(text: str) -> torch.Tensor:
        return pipe.encode_prompt(text, "cpu", 1, False, clip_skip=clip_skip)[0]

    return pipe(prompt_embeds=encode("a red fox"), negative_prompt_embeds=encode("blurry"), **args).images


def test_clip_skip_2_is_diffusers_clip_skip_1(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    # AUTOMATIC1111 counts the last layer as 1; diffusers counts layers skipped, so 2 here is 1 there.
    ours = run_loop(tiny_engine.components, _request(clip_skip=2)).images
    ref = _diffusers(sd_pipe, clip_skip=1)
    assert np.abs(ours - ref).max() <= TOL
    plain = run_loop(tiny_engine.components, _request()).images
    assert np.abs(plain - ref).max() > 1e-3  # clip skip changes the picture on this model
    assert np.abs(plain - _diffusers(sd_pipe)).max() <= TOL


def test_clip_skip_3_is_diffusers_clip_skip_2(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    ours = run_loop(tiny_engine.components, _request(clip_skip=3)).images
    assert np.abs(ours - _diffusers(sd_pipe, clip_skip=2)).max() <= TOL


def test_clip_skip_beyond_the_encoder_is_refused(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    layers = tiny_engine.components.max_clip_skip
    with pytest.raises(InvalidRequest) as err:
        run_loop(tiny_engine.components, _request(clip_skip=layers + 1))
    assert err.value.field == "clip_skip" and str(layers) in str(err.value)


def test_engines_without_clip_skip_say_so(tiny_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    comps = tiny_engine.components
    monkeypatch.setattr(comps, "_capabilities", replace(comps.capabilities, clip_skip=False))  # as Core ML's
    with pytest.raises(InvalidRequest) as err:
        run_loop(tiny_engine.components, _request(clip_skip=2))
    assert err.value.field == "clip_skip" and "not available" in str(err.value)
    assert run_loop(tiny_engine.components, _request(steps=1)).images.shape == (1, 64, 64, 3)




def test_interrupt_decodes_the_current_latents_as_diffusers_interrupt_does(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    token = CancelToken()
    steps: list[int] = []

    def on_progress(p: Progress) -> None:
        steps.append(p.step)
        if p.step == 2:
            token.interrupt()

    out = run_loop(tiny_engine.components, _request(steps=6), progress=on_progress, cancel=token)
    assert out.interrupted and steps == [1, 2] and out.seeds == [42]

    def stop_at_two(pipe, i, t, kwargs):  # type: ignore[no-untyped-def]
        if i == 1:  # after the second step: diffusers skips the rest and decodes
            pipe._interrupt = True
        return kwargs

    ref = _diffusers(sd_pipe, steps=6, callback_on_step_end=stop_at_two)
    assert np.abs(out.images - ref).max() <= TOL
    full = run_loop(tiny_engine.components, _request(steps=6)).images
    assert np.abs(full - ref).max() > 1e-3


def test_interrupt_keeps_finished_images_and_stops_the_rest(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    token = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.step == 5:  # second image (steps 4..6 on a 1-image-per-batch CPU engine), second step
            token.interrupt()

    out = run_loop(tiny_engine.components, _request(steps=3, count=3), progress=on_progress, cancel=token)
    assert out.interrupted and out.seeds == [42, 43] and out.images.shape[0] == 2
    first = run_loop(tiny_engine.components, _request(steps=3)).images[0]
    assert np.abs(out.images[0] - first).max() <= TOL


def test_skip_ends_the_current_image_early_and_goes_on(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    token = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.step == 1:
            token.skip()

    out = run_loop(tiny_engine.components, _request(steps=3, count=2), progress=on_progress, cancel=token)
    assert not out.interrupted and out.seeds == [42, 43]
    second = run_loop(tiny_engine.components, _request(steps=3, seed=43)).images[0]
    assert np.abs(out.images[1] - second).max() <= TOL  # the next image ran all its steps
    full_first = run_loop(tiny_engine.components, _request(steps=3)).images[0]
    assert np.abs(out.images[0] - full_first).max() > 1e-3  # the skipped one stopped after one step


def test_a_plain_cancel_still_decodes_nothing_after_an_interrupt_request_is_overridden() -> None:
    token = CancelToken()
    token.interrupt()
    assert token.interrupted
    token.cancel()  # the window's cancel wins: throw the work away
    assert token.cancelled and not token.interrupted
