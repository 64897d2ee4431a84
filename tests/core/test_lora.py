"""LoRAs and textual-inversion embeddings on the tiny model, against diffusers' own loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.lora import (
    EmbeddingUse,
    LoraUse,
    NetworkFinder,
    inspect_network_file,
    lora_hash,
    parse_network_hashes,
    resolve_networks,
    set_lora_tag,
    strip_lora_tags,
)
from heyim_desktop.core.metadata import format_parameters, parse_parameters
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler
from lora_helpers import write_embedding, write_lora

TOL = 1e-4


@pytest.fixture(scope="module")
def loras(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "style": write_lora(tiny_model, root / "style.safetensors", seed=1),
        "kohya": write_lora(tiny_model, root / "kohya-detail.safetensors", layout="kohya", seed=2),
        "unet_only": write_lora(tiny_model, root / "unet-only.safetensors", seed=3, text_encoder=False),
    }


@pytest.fixture()
def engine(tiny_model: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    e = load_torch_engine(tiny_model, device="cpu")
    yield e
    e.close()


def _req(**kw: object) -> GenerationRequest:
    base = dict(prompt="a red fox", negative_prompt="blurry", steps=3, guidance=6.0, seed=5, width=64, height=64,
                scheduler="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def _floats(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) / 255.0 for g in result.images])


def _diffusers(tiny_model: Path, files: list[tuple[Path, float]], prompt: str = "a red fox") -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    names = []
    for i, (path, _) in enumerate(files):
        pipe.load_lora_weights(str(path), adapter_name=f"a{i}")
        names.append(f"a{i}")
    if names:
        pipe.set_adapters(names, adapter_weights=[w for _, w in files])
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)
    out = pipe(prompt, negative_prompt="blurry", num_inference_steps=3, guidance_scale=6.0, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    return np.round(out * 255) / 255  # as our PNG-bound images are rounded


def test_one_lora_equals_diffusers(engine, tiny_model: Path, loras: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    ours = _floats(engine.generate(_req(loras=(LoraUse(str(loras["style"]), 0.8),))))
    ref = _diffusers(tiny_model, [(loras["style"], 0.8)])
    assert np.abs(ours - ref).max() <= TOL
    plain = _floats(engine.generate(_req()))
    assert np.abs(ours - plain).max() > 0.01  # the LoRA does something


def test_two_stacked_loras_kohya_and_diffusers_layouts(engine, tiny_model: Path, loras: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    uses = (LoraUse(str(loras["style"]), 0.7), LoraUse(str(loras["kohya"]), -0.5))
    ours = _floats(engine.generate(_req(loras=uses)))
    ref = _diffusers(tiny_model, [(loras["style"], 0.7), (loras["kohya"], -0.5)])
    assert np.abs(ours - ref).max() <= TOL


def test_fp16_files_cost_their_size_and_still_equal_diffusers(engine, tiny_model: Path, loras: dict[str, Path],  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    halves = []
    for key in ("style", "kohya"):
        half = tmp_path / f"{key}-fp16.safetensors"
        save_file({k: v.half() for k, v in load_file(str(loras[key])).items()}, str(half))
        halves.append(half)
    uses = (LoraUse(str(halves[0]), 0.7), LoraUse(str(halves[1]), -0.5))
    ours = _floats(engine.generate(_req(loras=uses)))
    assert np.abs(ours - _diffusers(tiny_model, [(halves[0], 0.7), (halves[1], -0.5)])).max() <= TOL
    # The model is fp32; the LoRA layers hold the files' fp16 values, not fp32 copies of them.
    held = [p for m in (engine.components.unet_model, engine.components.text_encoder)
            for n, p in m.named_parameters() if ".lora_" in n]
    file_bytes = sum(v.numel() * v.element_size() for h in halves for k, v in load_file(str(h)).items()
                     if not k.endswith("alpha"))
    assert {p.dtype for p in held} == {torch.float16}
    assert sum(p.numel() * p.element_size() for p in held) == file_bytes


def test_after_unloading_the_image_is_the_no_lora_image_exactly(engine, loras: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    before = engine.generate(_req()).images[0].image.tobytes()
    engine.generate(_req(loras=(LoraUse(str(loras["style"]), 1.0), LoraUse(str(loras["unet_only"]), 0.5))))
    switched = engine.generate(_req(loras=(LoraUse(str(loras["kohya"]), 1.0),)))
    assert switched.images[0].image.tobytes() != before
    assert engine.generate(_req()).images[0].image.tobytes() == before


def test_same_set_is_not_loaded_again(engine, loras: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    use = (LoraUse(str(loras["style"]), 1.0),)
    engine.generate(_req(loras=use))
    patcher = engine.components._networks
    calls: list[str] = []
    original = patcher._pipeline().load_lora_weights
    monkeypatch.setattr(patcher._pipeline(), "load_lora_weights", lambda *a, **k: (calls.append("load"), original(*a, **k)))
    engine.generate(_req(loras=(LoraUse(str(loras["style"]), 0.4),)))  # weight change only
    assert calls == []


def test_prompt_tags_resolve_through_the_library_and_are_not_encoded(engine, loras: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    finder = NetworkFinder(lambda name: {"style": loras["style"]}.get(name))
    tagged = resolve_networks(_req(prompt="a red fox <lora:style:0.8>"), finder)
    assert tagged.loras == (LoraUse(str(loras["style"]), 0.8, "style"),)
    explicit = _req(loras=(LoraUse(str(loras["style"]), 0.8),))
    a = engine.generate(tagged)
    assert a.images[0].image.tobytes() == engine.generate(explicit).images[0].image.tobytes()
    assert a.request.prompt == "a red fox <lora:style:0.8>"  # metadata keeps the tag
    with pytest.raises(InvalidRequest, match="unknown LoRA 'missing'"):
        resolve_networks(_req(prompt="x <lora:missing:1>"), finder)


def test_tag_parsing_like_automatic1111() -> None:
    assert strip_lora_tags("a cat, <lora:Detail Tweaker:0.6>, <lora:x>") == ("a cat", [("Detail Tweaker", 0.6), ("x", 1.0)])
    assert strip_lora_tags("<lyco:neg:-1.5> dog") == ("dog", [("neg", -1.5)])
    assert set_lora_tag("a cat", "x", 0.5) == "a cat <lora:x:0.5>"
    assert set_lora_tag("a cat <lora:x:0.5>", "x", 0.8) == "a cat <lora:x:0.8>"
    assert set_lora_tag("a cat <lora:x:0.5>", "x", None) == "a cat"


def test_metadata_writes_lora_hashes(loras: dict[str, Path]) -> None:
    req = _req(prompt="a fox <lora:style:0.8>", loras=(LoraUse(str(loras["style"]), 0.8, "style"),)).with_seed()
    text = format_parameters(req, 5, "tiny")
    params = parse_parameters(text)
    assert "<lora:style:0.8>" in params.prompt
    assert parse_network_hashes(params.params["Lora hashes"]) == {"style": lora_hash(loras["style"])}
    assert len(lora_hash(loras["style"])) == 12


def test_file_recognition_and_refusals(tmp_path: Path, loras: dict[str, Path], engine) -> None:  # type: ignore[no-untyped-def]
    assert inspect_network_file(loras["style"]).layout == "diffusers"
    assert inspect_network_file(loras["kohya"]).layout == "kohya"
    emb = inspect_network_file(write_embedding(tmp_path / "easyneg.safetensors"))
    assert emb.kind == "embedding" and emb.vectors == 2
    # A LoRA made for a 768-wide (SD 1.x) UNet is refused by this 32-wide tiny model, naming both.
    from safetensors.torch import save_file

    sd1 = tmp_path / "sd15-lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(320, 4)},
              str(sd1))
    assert inspect_network_file(sd1).family == "sd1"
    with pytest.raises(ModelError, match="for SD 1.x models"):
        engine.generate(_req(loras=(LoraUse(str(sd1)),)))
    pickle = tmp_path / "renamed.safetensors"
    pickle.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(ModelError, match="pickle"):
        engine.generate(_req(loras=(LoraUse(str(pickle)),)))
    corrupt = tmp_path / "cut.safetensors"
    corrupt.write_bytes(loras["style"].read_bytes()[:200])
    with pytest.raises(ModelError):
        engine.generate(_req(loras=(LoraUse(str(corrupt)),)))
    loha = tmp_path / "loha.safetensors"
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(loha))
    with pytest.raises(ModelError, match="layer lora_unet_x lacks hada_w1_b, hada_w2_a, hada_w2_b"):
        engine.generate(_req(loras=(LoraUse(str(loha)),)))
    # After all those refusals the model still makes its plain image.
    assert engine.generate(_req()).images


def test_embedding_word_activates_it_like_diffusers(engine, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    path = write_embedding(tmp_path / "easyneg.safetensors", vectors=2)
    finder = NetworkFinder(lambda name: None, lambda: {"easyneg": path})
    req = resolve_networks(_req(negative_prompt="easyneg, blurry"), finder)
    assert req.embeddings == (EmbeddingUse(str(path), "easyneg"),)
    ours = _floats(engine.generate(req))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(str(path), token="easyneg")
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)
    ref = pipe("a red fox", negative_prompt="easyneg, blurry", num_inference_steps=3, guidance_scale=6.0, height=64,
               width=64, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    assert np.abs(ours - np.round(ref * 255) / 255).max() <= TOL
    text = format_parameters(req.with_seed(), 5, "tiny")
    assert "TI hashes: \"easyneg: " in text


def test_codec_sends_lora_names_not_paths(loras: dict[str, Path]) -> None:
    from heyim_desktop.core.codec import request_from_data, request_to_data

    req = _req(loras=(LoraUse(str(loras["style"]), 0.5, "style"),))
    data = request_to_data(req)
    assert data["loras"] == [{"name": "style", "weight": 0.5}]
    back = request_from_data(data)
    assert back.loras == (LoraUse("", 0.5, "style"),)
    trusted = request_from_data(request_to_data(req, include_paths=True), trust_paths=True)
    assert trusted.loras == req.loras
    resolved = resolve_networks(back, NetworkFinder(lambda name: loras["style"] if name == "style" else None))
    assert resolved.loras == (LoraUse(str(loras["style"]), 0.5, "style"),)
