"""AUTOMATIC1111's weights and 75-token chunks on SDXL, against a reference built by hand.

The reference follows A1111's rule step by step: each of SDXL's two text encoders reads
every 75-token chunk as 77 tokens (start, tokens, end, padding: the end token for CLIP
ViT-L, ``!`` for OpenCLIP bigG), takes the penultimate hidden states, multiplies each
token by its weight and restores the chunk's mean, separately for each encoder; the two
join on channels and the chunks on tokens; the pooled text is bigG's of the first chunk,
unweighted; a shorter negative is padded with the empty prompt's chunk. diffusers'
``StableDiffusionXLPipeline`` is then fed those embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler

TOL = 1e-4
WORDS = "a red fox in the city with blue sky and sun on the river night cat dog house car flower bird".split()


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


def _reference(pipe: Any, pieces: list[tuple[str, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (1, 77 * chunks, C), pooled (1, P)) for words with weights, A1111's way."""
    per_encoder = []
    pooled = None
    for tokenizer, encoder, pad in (
        (pipe.tokenizer, pipe.text_encoder, pipe.tokenizer.eos_token_id),
        (pipe.tokenizer_2, pipe.text_encoder_2, pipe.tokenizer_2.convert_tokens_to_ids("!")),
    ):
        ids: list[int] = []
        weights: list[float] = []
        for word, weight in pieces:
            piece = tokenizer(word, add_special_tokens=False)["input_ids"]
            ids += piece
            weights += [weight] * len(piece)
        chunks = [(ids[i : i + 75], weights[i : i + 75]) for i in range(0, max(len(ids), 1), 75)]
        hiddens = []
        for index, (chunk, chunk_weights) in enumerate(chunks):
            rest = 75 - len(chunk)
            row = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id] + [pad] * rest
            w = torch.tensor([1.0, *chunk_weights, 1.0] + [1.0] * rest).reshape(1, -1, 1)
            with torch.no_grad():
                out = encoder(torch.tensor([row]), output_hidden_states=True)
            z = out.hidden_states[-2]
            before = z.mean()
            z = z * w
            hiddens.append(z * (before / z.mean()))
            if index == 0 and hasattr(out, "text_embeds"):
                pooled = out.text_embeds
        per_encoder.append(hiddens)
    joined = [torch.cat(pair, dim=-1) for pair in zip(*per_encoder)]
    assert pooled is not None
    return torch.cat(joined, dim=1), pooled


def _words(n: int, offset: int = 0) -> list[str]:
    return [WORDS[(i + offset) % len(WORDS)] for i in range(n)]


def test_each_word_is_one_token_for_both_tokenizers(xl_pipe) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(_words(40))
    assert len(xl_pipe.tokenizer(text, add_special_tokens=False)["input_ids"]) == 40
    assert len(xl_pipe.tokenizer_2(text, add_special_tokens=False)["input_ids"]) == 40


def test_long_weighted_sdxl_prompt_equals_the_reference(tiny_sdxl_engine, xl_pipe) -> None:  # type: ignore[no-untyped-def]
    scheduler = "DPM++ 2M"
    # 88 words (two chunks, no commas so no backtracking), weights in both chunks.
    words = _words(88)
    pieces = [(w, 1.0) for w in words]
    pieces[4] = (words[4], 1.3)
    pieces[80] = (words[80], 1 / 1.1)
    prompt = " ".join(f"({w}:1.3)" if i == 4 else f"[{w}]" if i == 80 else w for i, w in enumerate(words))
    cond, pooled = _reference(xl_pipe, [(f" {w}" if i else w, wt) for i, (w, wt) in enumerate(pieces)])
    uncond_1, neg_pooled = _reference(xl_pipe, [("blurry", 1.1)])
    empty, _ = _reference(xl_pipe, [])
    uncond = torch.cat([uncond_1, empty], dim=1)
    assert cond.shape == uncond.shape == (1, 154, 96)

    req = GenerationRequest(prompt=prompt, negative_prompt="(blurry)", steps=3, guidance=6.0, seed=5,
                            width=64, height=64, scheduler=scheduler)
    ours = run_loop(tiny_sdxl_engine.components, req)
    assert not ours.warnings
    xl_pipe.scheduler = build_scheduler(scheduler, tiny_sdxl_engine.components.scheduler_config)
    ref = xl_pipe(prompt_embeds=cond, pooled_prompt_embeds=pooled, negative_prompt_embeds=uncond,
                  negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=3, guidance_scale=6.0, height=64,
                  width=64, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    assert np.abs(ours.images - ref).max() <= TOL
    # The second chunk and the weights matter: each change moves the image past the bound.
    cut = run_loop(tiny_sdxl_engine.components, req.replace(prompt=" ".join(words[:75]))).images
    plain = run_loop(tiny_sdxl_engine.components, req.replace(prompt=" ".join(words))).images
    assert np.abs(ours.images - cut).max() > TOL and np.abs(ours.images - plain).max() > TOL


def test_short_weighted_sdxl_prompt_and_weight_one(tiny_sdxl_engine, xl_pipe) -> None:  # type: ignore[no-untyped-def]
    cond, pooled = _reference(xl_pipe, [("a", 1.0), (" red", 1.5), (" fox", 1.0)])
    uncond, neg_pooled = _reference(xl_pipe, [("ugly", 1.0)])
    req = GenerationRequest(prompt="a (red:1.5) fox", negative_prompt="ugly", steps=2, guidance=5.0, seed=8,
                            width=64, height=64, scheduler="DDIM")
    ours = run_loop(tiny_sdxl_engine.components, req).images
    xl_pipe.scheduler = build_scheduler("DDIM", tiny_sdxl_engine.components.scheduler_config)
    ref = xl_pipe(prompt_embeds=cond, pooled_prompt_embeds=pooled, negative_prompt_embeds=uncond,
                  negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=2, guidance_scale=5.0, height=64,
                  width=64, generator=torch.Generator("cpu").manual_seed(8), output_type="np").images
    assert np.abs(ours - ref).max() <= TOL
    one = run_loop(tiny_sdxl_engine.components, req.replace(prompt="a (red:1.0) fox")).images
    assert np.array_equal(one, run_loop(tiny_sdxl_engine.components, req.replace(prompt="a red fox")).images)
