"""AUTOMATIC1111's prompt syntax: parsing, 75-token chunks, weights with the mean restored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.prompts import (
    ClipEncoder,
    chunk_prompt,
    count_tokens,
    encode_prompt,
    encode_prompt_pair,
    parse_prompt_attention,
)
from heyim_desktop.core.request import GenerationRequest

TOL = 1e-4
#: Words the tiny tokenizer reads as one token each.
WORDS = "a red fox in the city with blue sky and sun on the river night cat dog house car flower bird".split()

# AUTOMATIC1111's parse_prompt_attention docstring, example for example, then the rest of
# its syntax (nesting, square brackets, escapes, BREAK).
PARSE_TABLE = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
         (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
    ),
    ("((word))", [("word", 1.2100000000000002)]),
    ("(word:1.3)", [("word", 1.3)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
    ("(word:1.0)", [("word", 1.0)]),
    ("a (red:1.0) fox", [("a red fox", 1.0)]),
    ("\\(a\\) \\[b\\] c\\\\d", [("(a) [b] c\\d", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("aBREAKb", [("aBREAKb", 1.0)]),
    ("photo: a fox", [("photo: a fox", 1.0)]),
    ("word:1.2)", [("word:1.2)", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_TABLE)
def test_parse_prompt_attention_table(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


@pytest.fixture(scope="module")
def biased_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a non-zero bias in the text encoder's final layer norm.

    A freshly initialised layer norm has no bias, so every token vector has a zero mean and
    A1111's mean restore would divide zero by zero; real encoders have one.
    """
    import shutil

    from transformers import CLIPTextModel

    folder = tmp_path_factory.mktemp("biased") / "tiny-biased"
    shutil.copytree(tiny_model, folder)
    te = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        bias = te.get_parameter("final_layer_norm.bias")
        bias.copy_(0.3 + 0.5 * torch.randn(bias.shape, generator=gen))
    te.save_pretrained(folder / "text_encoder", safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def tiny_engine(biased_model: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(biased_model, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_engine):  # type: ignore[no-untyped-def]
    return tiny_engine.components.tokenizer


@pytest.fixture(scope="module")
def text_encoder(tiny_engine):  # type: ignore[no-untyped-def]
    return tiny_engine.components.text_encoder


def _words(n: int, offset: int = 0) -> list[str]:
    return [WORDS[(i + offset) % len(WORDS)] for i in range(n)]


def test_tiny_tokenizer_reads_each_word_as_one_token(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert len(tokenizer(" ".join(_words(30)), add_special_tokens=False)["input_ids"]) == 30


def test_long_prompt_splits_into_75_token_chunks(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunked = chunk_prompt(tokenizer, " ".join(_words(160)), max_chunks=8)
    assert [len(c.tokens) for c in chunked.chunks] == [75, 75, 10]
    assert chunked.token_count == 160 and not chunked.dropped


def test_full_chunk_breaks_at_a_comma_within_20_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    # A comma as token 61 (index 60): the chunk ends after it and the 14 words after it move on.
    near = " ".join(_words(60)) + ", " + " ".join(_words(40))
    sizes = [len(c.tokens) for c in chunk_prompt(tokenizer, near, max_chunks=8).chunks]
    assert sizes == [61, 40]
    # A comma 25 tokens back is too far: the chunk is cut at 75.
    far = " ".join(_words(50)) + ", " + " ".join(_words(40))
    assert [len(c.tokens) for c in chunk_prompt(tokenizer, far, max_chunks=8).chunks] == [75, 16]
    # The edge: a comma exactly 20 tokens back breaks there, 21 back does not.
    edge = " ".join(_words(55)) + ", " + " ".join(_words(30))
    assert [len(c.tokens) for c in chunk_prompt(tokenizer, edge, max_chunks=8).chunks] == [56, 30]
    past = " ".join(_words(54)) + ", " + " ".join(_words(30))
    assert [len(c.tokens) for c in chunk_prompt(tokenizer, past, max_chunks=8).chunks] == [75, 10]
    # A comma as the 76th token opens the next chunk.
    comma_next = " ".join(_words(75)) + ", " + " ".join(_words(3))
    chunks = chunk_prompt(tokenizer, comma_next, max_chunks=8).chunks
    assert [len(c.tokens) for c in chunks] == [75, 4] and chunks[1].tokens[0] == tokenizer.convert_tokens_to_ids(",</w>")


def test_break_starts_a_new_chunk(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunked = chunk_prompt(tokenizer, "a red fox BREAK blue sky", max_chunks=8)
    assert [len(c.tokens) for c in chunked.chunks] == [3, 2]
    assert chunked.token_count == 77  # A1111 counts the first chunk as a full 75


def test_one_window_model_cuts_at_75_and_reads_break_as_a_space(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunked = chunk_prompt(tokenizer, " ".join(_words(60)) + ", " + " ".join(_words(40)), max_chunks=1)
    assert [len(c.tokens) for c in chunked.chunks] == [75] and len(chunked.dropped) == 26
    joined = chunk_prompt(tokenizer, "a red fox BREAK blue sky", max_chunks=1)
    assert joined.break_ignored and [len(c.tokens) for c in joined.chunks] == [5]


def test_token_count_shows_chunks_or_the_cut(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(_words(83))
    chunked = count_tokens(tokenizer, text, max_chunks=8)
    assert (chunked.tokens, chunked.limit, chunked.chunks) == (83, 150, 2)
    assert chunked.boundaries == (75,) and chunked.chunk_tokens == (75, 8) and chunked.cut_at is None
    assert chunked.chunk_starts and chunked.chunk_starts[0].split()[0] == _words(83)[75]
    window = count_tokens(tokenizer, text, max_chunks=1)
    assert (window.tokens, window.limit, window.cut_at, window.window) == (83, 75, 75, 77)
    assert window.cut_text is not None and window.cut_text.split() == _words(83)[75:]
    assert count_tokens(tokenizer, "", max_chunks=8).tokens == 0
    # Half-typed or broken weights still count.
    assert count_tokens(tokenizer, "(red:.) fox", max_chunks=8).tokens > 0


# -- encoding against a reference computation of A1111's rule ------------------------------


def _reference_chunk(tokenizer, text_encoder, pieces: list[tuple[str, float]]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """One 77-token chunk as AUTOMATIC1111 builds it, written out step by step."""
    ids, weights = [tokenizer.bos_token_id], [1.0]
    for text, weight in pieces:
        piece_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    pad = 77 - len(ids)
    ids += [tokenizer.eos_token_id] * pad
    weights += [1.0] * pad
    with torch.no_grad():
        z = text_encoder(torch.tensor([ids]))[0]
    original_mean = z.mean()
    z = z * torch.tensor(weights).reshape(1, -1, 1).expand(z.shape)
    return z * (original_mean / z.mean())


def _encoders(tiny_engine):  # type: ignore[no-untyped-def]
    comps = tiny_engine.components
    return (ClipEncoder(comps.tokenizer, comps._clip_encode),)


def test_weights_follow_automatic1111s_rule(tiny_engine, tokenizer, text_encoder) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        ours = encode_prompt(_encoders(tiny_engine), "a (red:1.5) [fox]", torch.device("cpu"), max_chunks=8)
    ref = _reference_chunk(tokenizer, text_encoder, [("a ", 1.0), ("red", 1.5), (" ", 1.0), ("fox", 1 / 1.1)])
    assert ours.cond.hidden.shape == (1, 77, 32)
    torch.testing.assert_close(ours.cond.hidden, ref, rtol=0, atol=1e-6)
    with torch.no_grad():
        plain = encode_prompt(_encoders(tiny_engine), "a red fox", torch.device("cpu"), max_chunks=8)
    assert not torch.allclose(plain.cond.hidden, ours.cond.hidden)


def test_pooled_output_comes_from_the_first_chunk_and_encoders_join_on_channels(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    comps = tiny_engine.components
    calls: list[torch.Tensor] = []

    def second(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(ids)
        hidden = comps.encode_text(ids, mask)
        return hidden * 2.0, ids[:, :4].float()

    encoders = (ClipEncoder(comps.tokenizer, comps._clip_encode), ClipEncoder(comps.tokenizer, second))
    with torch.no_grad():
        out = encode_prompt(encoders, " ".join(_words(100)), torch.device("cpu"), max_chunks=8)
    assert out.chunks == 2 and out.cond.hidden.shape == (1, 154, 64)
    assert out.cond.pooled is not None and torch.equal(out.cond.pooled, calls[0][:, :4].float())
    torch.testing.assert_close(out.cond.hidden[..., 32:], out.cond.hidden[..., :32] * 2.0)


def test_bad_weight_is_a_clear_error(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a (red:.) fox", seed=1, width=64, height=64)
    with pytest.raises(InvalidRequest, match="prompt.*weight"):
        tiny_engine.components.encode_prompts(req, with_negative=True)


# -- images ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_pipe(biased_model: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        biased_model, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ours(tiny_engine, prompt: str, negative: str = "") -> np.ndarray:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt=prompt, negative_prompt=negative, steps=3, guidance=7.0, seed=7,
                            width=64, height=64, scheduler="Euler")
    return run_loop(tiny_engine.components, req).images


def _theirs(sd_pipe, tiny_engine, cond: torch.Tensor, uncond: torch.Tensor) -> np.ndarray:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.schedulers import build_scheduler

    sd_pipe.scheduler = build_scheduler("Euler", tiny_engine.components.scheduler_config)
    return sd_pipe(
        prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=3, guidance_scale=7.0,
        height=64, width=64, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
    ).images


def test_weight_one_gives_exactly_the_plain_image(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    plain = _ours(tiny_engine, "a red fox", "blurry")
    assert np.array_equal(_ours(tiny_engine, "a (red:1.0) fox", "(blurry:1.0)"), plain)
    assert not np.array_equal(_ours(tiny_engine, "a (red:1.4) fox", "blurry"), plain)


def test_weighted_prompt_image_equals_diffusers_with_the_reference_embeddings(  # type: ignore[no-untyped-def]
    tiny_engine, sd_pipe, tokenizer, text_encoder
) -> None:
    cond = _reference_chunk(tokenizer, text_encoder, [("a ", 1.0), ("red", 1.5), (" fox", 1.0)])
    uncond = _reference_chunk(tokenizer, text_encoder, [("blurry", 1.1)])
    ref = _theirs(sd_pipe, tiny_engine, cond, uncond)
    ours = _ours(tiny_engine, "a (red:1.5) fox", "(blurry)")
    assert np.abs(ours - ref).max() <= TOL


def test_long_prompt_and_short_negative_pad_as_automatic1111(  # type: ignore[no-untyped-def]
    tiny_engine, sd_pipe, tokenizer, text_encoder
) -> None:
    words = _words(120)
    prompt = " ".join(words)
    cond = torch.cat([
        _reference_chunk(tokenizer, text_encoder, [(" ".join(words[:75]), 1.0)]),
        _reference_chunk(tokenizer, text_encoder, [(" ".join(words[75:]), 1.0)]),
    ], dim=1)
    # The one-chunk negative prompt is padded with the empty prompt's chunk.
    uncond = torch.cat([
        _reference_chunk(tokenizer, text_encoder, [("blurry", 1.0)]),
        _reference_chunk(tokenizer, text_encoder, []),
    ], dim=1)
    enc = tiny_engine.components.encode_prompts(
        GenerationRequest(prompt=prompt, negative_prompt="blurry"), with_negative=True
    )
    assert enc.uncond is not None and enc.cond.hidden.shape == enc.uncond.hidden.shape == (1, 154, 32)
    torch.testing.assert_close(enc.uncond.hidden, uncond, rtol=0, atol=1e-6)
    ours = _ours(tiny_engine, prompt, "blurry")
    assert np.abs(ours - _theirs(sd_pipe, tiny_engine, cond, uncond)).max() <= TOL
    # The prompt's last 20 tokens read: changing them changes the image.
    changed = " ".join(words[:100] + _words(20, offset=5))
    assert changed != prompt
    assert np.abs(_ours(tiny_engine, changed, "blurry") - ours).max() > 1e-3
    # And the other way round: a long negative prompt pads the prompt.
    enc = tiny_engine.components.encode_prompts(
        GenerationRequest(prompt="a fox", negative_prompt=prompt), with_negative=True
    )
    assert enc.uncond is not None and enc.cond.hidden.shape == enc.uncond.hidden.shape == (1, 154, 32)


def test_one_window_engine_applies_weights_and_cuts_with_the_warning(tiny_engine, caplog) -> None:  # type: ignore[no-untyped-def]
    comps = tiny_engine.components
    long = " ".join(_words(80)) + " zebra"
    req = GenerationRequest(prompt=long, negative_prompt="(blurry:1.3) BREAK ugly")
    with torch.no_grad():
        enc = encode_prompt_pair(req, encoders=_encoders(tiny_engine), with_negative=True, device=comps.device,
                                 dtype=comps.dtype, max_chunks=1)
    assert enc.cond.hidden.shape == (1, 77, 32)
    assert enc.truncated_prompt is not None and "zebra" in enc.truncated_prompt
    assert "longer than 77 tokens" in caplog.text
    assert any("BREAK" in w for w in enc.warnings)
    with torch.no_grad():
        plain = encode_prompt_pair(req.replace(negative_prompt="blurry ugly"), encoders=_encoders(tiny_engine),
                                   with_negative=True, device=comps.device, dtype=comps.dtype, max_chunks=1)
    assert plain.uncond is not None and enc.uncond is not None
    assert not torch.allclose(plain.uncond.hidden, enc.uncond.hidden)


def test_half_precision_output_is_weighted_in_float32_and_returned_in_half() -> None:
    from heyim_desktop.core.prompts import apply_weights

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 77, 8, generator=gen) + 0.5
    weights = [1.0, 1.3] + [1.0] * 75
    full = apply_weights(z, weights)
    half = apply_weights(z.half(), weights)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-3, atol=2e-3)
    assert torch.allclose(full.mean(), z.mean(), atol=1e-6)  # the mean is restored
    assert apply_weights(z, [1.0] * 77) is z


@pytest.mark.parametrize("pad_token", [None, "!"])
def test_a_plain_chunk_is_exactly_the_tokenizers_own_padding(tmp_path: Path, pad_token: str | None) -> None:
    """CLIP ViT-L pads with the end token, OpenCLIP (SD 2.x, SDXL's second encoder) with ``!``."""
    from transformers import CLIPTokenizer

    from heyim_desktop.core.demo_model import write_tokenizer
    from heyim_desktop.core.prompts import chunk_ids

    write_tokenizer(tmp_path)
    kwargs = {"pad_token": pad_token} if pad_token else {}
    tok = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True, **kwargs)
    for text in ("a red fox", "", " ".join(_words(75))):
        ref = tok(text, padding="max_length", max_length=77, truncation=True)
        (chunk,) = chunk_prompt(tok, text, max_chunks=8).chunks
        ids, mask, weights = chunk_ids(tok, chunk)
        assert ids == ref["input_ids"] and mask == ref["attention_mask"] and set(weights) == {1.0}


def test_plain_prompt_embeddings_equal_diffusers_bit_for_bit(tiny_engine, sd_pipe) -> None:  # type: ignore[no-untyped-def]
    enc = tiny_engine.components.encode_prompts(
        GenerationRequest(prompt="a red fox", negative_prompt="blurry"), with_negative=True
    )
    with torch.no_grad():
        cond, uncond = sd_pipe.encode_prompt("a red fox", "cpu", 1, True, negative_prompt="blurry")
    assert enc.uncond is not None
    assert torch.equal(enc.cond.hidden, cond) and torch.equal(enc.uncond.hidden, uncond)
