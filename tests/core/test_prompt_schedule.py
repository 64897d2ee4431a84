"""AUTOMATIC1111's prompt editing ``[a:b:when]``, alternation ``[a|b]`` and ``AND``.

The parse table is A1111's own examples; the images are checked against diffusers'
pipelines driven step by step (``callback_on_step_end`` swapping the prompt embeddings) and
against a denoising loop written out by hand for ``AND``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.prompt_schedule import encode_request, plan_prompts, prompt_schedule, split_and
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4

# AUTOMATIC1111's get_learned_conditioning_prompt_schedules docstring (10 steps), then the
# forms its wiki describes. One docstring line, ``a [{b|d{:.5] c`` (marked "not handling
# this right now" there), is given as A1111's grammar really reads it: literally, since a
# ``|`` outside an alternation does not parse (checked against its grammar run by lark).
SCHEDULE_TABLE = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(i, "a" if i % 2 else "(b:1.1)") for i in range(1, 11)]),
    ("[fe|]male", [(i, "female" if i % 2 else "male") for i in range(1, 11)]),
    ("[fe|||]male", [(i, "female" if i % 4 == 1 else "male") for i in range(1, 11)]),
    # The wiki's forms: [from:to:when] as a fraction and as a step, [to:when], [from::when].
    ("a [red:blue:0.25] fox", [(2, "a red fox"), (10, "a blue fox")]),
    ("a [red:blue:7] fox", [(7, "a red fox"), (10, "a blue fox")]),
    ("a [red::0.5] fox", [(5, "a red fox"), (10, "a  fox")]),
    ("a [:red:0.5] fox", [(5, "a  fox"), (10, "a red fox")]),
    # Capped at the step count, below 1 never switches back, a decimal point means a fraction.
    ("[a:b:30]", [(10, "a")]),
    ("[a:b:1.5]", [(10, "a")]),
    ("[a:b:0]", [(10, "b")]),
    ("[a:b:-1]", [(10, "b")]),
    ("[a:b:1.0]", [(10, "a")]),
    ("[a:b:1]", [(1, "a"), (10, "b")]),
    # Not the grammar: read literally.
    ("a | b", [(10, "a | b")]),
    ("[a:b:c:1]", [(10, "[a:b:c:1]")]),
    ("a\\", [(10, "a\\")]),
    ("\\[a:b:2\\]", [(10, "\\[a:b:2\\]")]),
    ("(a:1.2) [b|c", [(10, "(a:1.2) [b|c")]),
]


@pytest.mark.parametrize(("text", "expected"), SCHEDULE_TABLE)
def test_prompt_schedule_table(text: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(text, 10) == expected


def test_wiki_landscape_example_at_100_steps() -> None:
    text = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
            "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert prompt_schedule(text, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("a cat", [("a cat", 1.0)]),
    ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
    ("a cat :1.2 AND a dog:0.8", [("a cat", 1.2), (" a dog", 0.8)]),
    ("cat:1.5", [("cat", 1.5)]),
    ("a (cat:1.2)", [("a (cat:1.2)", 1.0)]),
    ("ANDROID AND x: -0.5", [("ANDROID", 1.0), (" x", -0.5)]),
    ("a cat  ", [("a cat", 1.0)]),
])
def test_and_parts_and_weights(text: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(text) == expected


def test_plain_prompts_need_no_schedule() -> None:
    assert plan_prompts("a (red:1.2) fox, BREAK sky", "(blurry)", 20).plain
    assert not plan_prompts("a [red:blue:0.5] fox", "", 20).plain
    assert not plan_prompts("a fox", "[blurry|dark]", 20).plain
    assert not plan_prompts("a fox AND a cat", "", 20).plain
    assert not plan_prompts("a fox:1.3", "", 20).plain


# -- the plain path is today's path --------------------------------------------------------


def test_plain_prompt_takes_the_engine_path_untouched(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a (red:1.3) fox", negative_prompt="blurry", steps=3, guidance=7.0, seed=1,
                            width=64, height=64)
    comps = tiny_engine.components
    ours = encode_request(comps, req, with_negative=True)
    theirs = comps.encode_prompts(req, with_negative=True)
    assert ours.schedule is None
    assert torch.equal(ours.cond.hidden, theirs.cond.hidden)
    assert ours.uncond is not None and theirs.uncond is not None and torch.equal(ours.uncond.hidden, theirs.uncond.hidden)
    # ``cat:1`` is AUTOMATIC1111's prompt ``cat`` of weight 1: the same image, no schedule.
    a = run_loop(comps, req.replace(prompt="a red fox:1")).images
    assert np.array_equal(a, run_loop(comps, req.replace(prompt="a red fox")).images)


# -- scheduled prompts equal diffusers driven step by step ---------------------------------


@pytest.fixture(scope="module")
def sd_pipe(tiny_engine):  # type: ignore[no-untyped-def]
    """diffusers' pipeline over the engine's own modules (nothing loaded twice)."""
    from diffusers import StableDiffusionPipeline

    c = tiny_engine.components
    pipe = StableDiffusionPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet_model,
                                   scheduler=build_scheduler("Euler", c.scheduler_config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_embeds(pipe: Any, text: str) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(text, torch.device("cpu"), 1, False)
    return embeds


def test_prompt_editing_and_alternation_equal_diffusers_step_by_step(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    # 4 steps: [red:blue:0.5] switches at step 2 (steps 0-2 red, step 3 blue); the negative
    # alternates by A1111's schedule (1, 2, 3, 4), step s using the first entry >= s.
    positives = ["a red fox", "a red fox", "a red fox", "a blue fox"]
    negatives = ["blurry", "blurry", "dark", "blurry"]
    req = GenerationRequest(prompt="a [red:blue:0.5] fox", negative_prompt="[blurry|dark]", steps=4, guidance=7.0,
                            seed=3, width=64, height=64, scheduler="Euler a")
    ours = run_loop(tiny_engine.components, req).images

    pos = [_sd_embeds(sd_pipe, t) for t in positives]
    neg = [_sd_embeds(sd_pipe, t) for t in negatives]

    def swap(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nxt = min(i + 1, 3)
        return {"prompt_embeds": torch.cat([neg[nxt], pos[nxt]])}

    sd_pipe.scheduler = build_scheduler("Euler a", tiny_engine.components.scheduler_config)
    ref = sd_pipe(prompt_embeds=pos[0], negative_prompt_embeds=neg[0], num_inference_steps=4, guidance_scale=7.0,
                  height=64, width=64, generator=torch.Generator("cpu").manual_seed(3), output_type="np",
                  callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
    assert np.abs(ours - ref).max() <= TOL
    plain = run_loop(tiny_engine.components, req.replace(prompt="a red fox", negative_prompt="blurry")).images
    assert np.abs(ours - plain).max() > 10 * TOL  # the switch matters


def test_scheduled_prompt_without_guidance(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a [cat:dog:1] house", steps=3, guidance=1.0, seed=4, width=64, height=64,
                            scheduler="DDIM")
    ours = run_loop(tiny_engine.components, req).images
    pos = [_sd_embeds(sd_pipe, t) for t in ("a cat house", "a cat house", "a dog house")]
    sd_pipe.scheduler = build_scheduler("DDIM", tiny_engine.components.scheduler_config)
    ref = sd_pipe(prompt_embeds=pos[0], num_inference_steps=3, guidance_scale=1.0, height=64, width=64,
                  generator=torch.Generator("cpu").manual_seed(4), output_type="np",
                  callback_on_step_end=lambda p, i, t, kw: {"prompt_embeds": pos[min(i + 1, 2)]},
                  callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
    assert np.abs(ours - ref).max() <= TOL


# -- AND against a loop written out by hand -------------------------------------------------


def test_and_equals_composable_diffusion_by_hand(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    steps, scale, seed = 3, 6.0, 9
    req = GenerationRequest(prompt="a red fox AND a blue house:0.7", negative_prompt="blurry", steps=steps,
                            guidance=scale, seed=seed, width=64, height=64, scheduler="Euler")
    ours = run_loop(tiny_engine.components, req).images

    unet, vae = sd_pipe.unet, sd_pipe.vae
    sched = build_scheduler("Euler", tiny_engine.components.scheduler_config)
    sched.set_timesteps(steps)
    u, c1, c2 = (_sd_embeds(sd_pipe, t) for t in ("blurry", "a red fox", " a blue house"))
    with torch.no_grad():
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(seed)) * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 3), t)
            eps_u, eps_1, eps_2 = unet(x, t, encoder_hidden_states=torch.cat([u, c1, c2])).sample.chunk(3)
            eps = eps_u + (eps_1 - eps_u) * (1.0 * scale) + (eps_2 - eps_u) * (0.7 * scale)
            latents = sched.step(eps, t, latents).prev_sample
        image = vae.decode(latents / vae.config.scaling_factor).sample
    ref = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= TOL
    # The weight matters, and one part alone is ordinary guidance.
    other = run_loop(tiny_engine.components, req.replace(prompt="a red fox AND a blue house:0.2")).images
    assert np.abs(ours - other).max() > 10 * TOL


def test_and_with_a_scheduled_part_and_a_long_part(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    long_part = " ".join(["fox"] * 80)  # two chunks: the other part is evened out
    req = GenerationRequest(prompt=f"a [cat:dog:0.5] AND {long_part}", negative_prompt="blurry", steps=2, guidance=5.0,
                            seed=1, width=64, height=64, scheduler="Euler")
    enc = encode_request(tiny_engine.components, req, with_negative=True)
    assert enc.schedule is not None and enc.schedule.weights == (1.0, 1.0)
    conds, uncond = enc.schedule.at(0)
    assert [c.hidden.shape[1] for c in conds] == [154, 154] and uncond is not None and uncond.hidden.shape[1] == 154
    short = enc.schedule.parts[0][0][1].hidden
    assert torch.equal(conds[0].hidden[:, 77:], short[:, -1:].expand(1, 77, -1))  # A1111 repeats the last vector
    assert enc.schedule.key_at(0) == enc.schedule.key_at(1) != enc.schedule.key_at(2)
    out = run_loop(tiny_engine.components, req)
    assert np.isfinite(out.images).all()


def test_and_needs_guidance(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a fox AND a cat", steps=2, guidance=1.0, seed=1, width=64, height=64)
    with pytest.raises(InvalidRequest) as err:
        run_loop(tiny_engine.components, req)
    assert err.value.field == "prompt" and "AND" in str(err.value)
    out = run_loop(tiny_engine.components, req.replace(prompt="a fox:1.4"))
    assert any("weight" in w for w in out.warnings)
    assert np.array_equal(out.images, run_loop(tiny_engine.components, req.replace(prompt="a fox")).images)


# -- SDXL: pooled embeddings follow each scheduled text -------------------------------------


@pytest.fixture(scope="module")
def xl_pipe(tiny_sdxl_engine):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLPipeline

    c = tiny_sdxl_engine.components
    pipe = StableDiffusionXLPipeline(vae=c.vae, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2,
                                     tokenizer=c.tokenizer, tokenizer_2=c.tokenizer_2, unet=c.unet_model,
                                     scheduler=build_scheduler("Euler", c.scheduler_config), add_watermarker=False,
                                     force_zeros_for_empty_prompt=c.force_zeros_for_empty_prompt)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sdxl_scheduled_prompt_equals_diffusers_step_by_step(tiny_sdxl_engine, xl_pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a [red|blue] fox", negative_prompt="blurry", steps=3, guidance=6.0, seed=11,
                            width=64, height=64, scheduler="DPM++ 2M")
    ours = run_loop(tiny_sdxl_engine.components, req).images
    texts = ["a red fox", "a red fox", "a blue fox"]  # alternation: entries 1, 2, 3; step s uses entry >= s
    encoded = [xl_pipe.encode_prompt(t, device=torch.device("cpu"), do_classifier_free_guidance=True,
                                     negative_prompt="blurry") for t in texts]
    pos = [e[0] for e in encoded]
    pooled = [e[2] for e in encoded]
    neg, neg_pooled = encoded[0][1], encoded[0][3]

    def swap(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nxt = min(i + 1, 2)
        return {"prompt_embeds": torch.cat([neg, pos[nxt]]), "add_text_embeds": torch.cat([neg_pooled, pooled[nxt]])}

    xl_pipe.scheduler = build_scheduler("DPM++ 2M", tiny_sdxl_engine.components.scheduler_config)
    ref = xl_pipe(prompt_embeds=pos[0], pooled_prompt_embeds=pooled[0], negative_prompt_embeds=neg,
                  negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=3, guidance_scale=6.0, height=64,
                  width=64, generator=torch.Generator("cpu").manual_seed(11), output_type="np",
                  callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"]).images
    assert np.abs(ours - ref).max() <= TOL
    # Without swapping the pooled text, the image is not the same: the pooled part is checked.
    ref_stale = xl_pipe(prompt_embeds=pos[0], pooled_prompt_embeds=pooled[0], negative_prompt_embeds=neg,
                        negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=3, guidance_scale=6.0, height=64,
                        width=64, generator=torch.Generator("cpu").manual_seed(11), output_type="np",
                        callback_on_step_end=lambda p, i, t, kw: {"prompt_embeds": swap(p, i, t, kw)["prompt_embeds"]},
                        callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
    assert np.abs(ours - ref_stale).max() > TOL


def test_sdxl_and_uses_each_parts_pooled_text(tiny_sdxl_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a red fox AND a cat:0.5", negative_prompt="blurry", steps=2, guidance=5.0,
                            seed=2, width=64, height=64, scheduler="Euler")
    comps = tiny_sdxl_engine.components
    enc = encode_request(comps, req, with_negative=True)
    assert enc.schedule is not None and enc.schedule.weights == (1.0, 0.5)
    conds, uncond = enc.schedule.at(0)
    for cond, text in zip(conds, ("a red fox", " a cat")):
        alone = comps.encode_prompts(req.replace(prompt=text), with_negative=False).cond
        assert torch.equal(cond.pooled, alone.pooled) and torch.equal(cond.extras["time_ids"], alone.extras["time_ids"])
    assert uncond is not None and torch.equal(uncond.pooled, comps.encode_prompts(req, with_negative=True).uncond.pooled)
    assert np.isfinite(run_loop(comps, req).images).all()
