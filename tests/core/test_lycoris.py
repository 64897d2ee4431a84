"""LyCORIS LoHa and LoKr files on the tiny SD and SDXL models, against peft's own LoHa/LoKr layers
(made with random weights, written out as LyCORIS files) run through diffusers' pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.lora import LoraUse, inspect_network_file
from heyim_desktop.core.lycoris import read_lycoris, sgm_to_diffusers
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler
from lora_helpers import (
    LYCO_TE,
    LYCO_UNET,
    inject_peft_lycoris,
    kohya_names,
    set_peft_weight,
    sgm_name,
    write_lycoris,
)

TOL = 1e-4
RANK = {"loha": 4, "lokr": 2}
ALPHA = {"loha": 2.0, "lokr": 1.0}
STD = {"loha": 0.4, "lokr": 0.3}


def _req(**kw: object) -> GenerationRequest:
    base = dict(prompt="a red fox", negative_prompt="blurry", steps=2, guidance=6.0, seed=5, width=64, height=64,
                scheduler="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def _floats(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) / 255.0 for g in result.images])


def _run(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = pipe("a red fox", negative_prompt="blurry", num_inference_steps=2, guidance_scale=6.0, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    return np.round(out * 255) / 255  # as our PNG-bound images are rounded


@pytest.fixture(scope="module")
def sd_case(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A LoHa and a LoKr file for the tiny SD, and diffusers' pipeline with the same layers from peft."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("lyco")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)
    files = {}
    for i, algo in enumerate(("loha", "lokr")):
        kw = dict(rank=RANK[algo], alpha=ALPHA[algo], std=STD[algo])
        unet = inject_peft_lycoris(pipe.unet, algo, algo, targets=LYCO_UNET, seed=10 + i, **kw)  # type: ignore[arg-type]
        te = inject_peft_lycoris(pipe.text_encoder, algo, algo, targets=LYCO_TE, seed=20 + i, **kw)  # type: ignore[arg-type]
        layers = {**kohya_names(unet, "lora_unet_"), **kohya_names(te, "lora_te_", text=True)}
        files[algo] = write_lycoris(root / f"tiny-{algo}.safetensors", layers, algo=algo, rank=RANK[algo],
                                    alpha=ALPHA[algo])
    return pipe, files


@pytest.fixture(scope="module")
def sd_engine(tiny_model: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    e = load_torch_engine(tiny_model, device="cpu")
    yield e
    e.close()


def _reference(pipe, weights: dict[str, float]) -> np.ndarray:  # type: ignore[no-untyped-def]
    for algo in ("loha", "lokr"):
        for module in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                set_peft_weight(module, algo, weights.get(algo, 0.0))
    return _run(pipe)


def test_files_are_recognised(sd_case) -> None:  # type: ignore[no-untyped-def]
    _, files = sd_case
    for algo, path in files.items():
        info = inspect_network_file(path)
        assert (info.kind, info.layout, info.supported, info.cross_dim) == ("lora", algo, True, 32)
    loha = read_lycoris(files["loha"])
    assert any("hada_t1" in f.tensors for f in loha.values()) and any("hada_t1" not in f.tensors for f in loha.values())
    lokr = read_lycoris(files["lokr"])
    forms = {tuple(sorted(f.tensors)) for f in lokr.values()}
    assert any("lokr_t2" in f for f in forms) and any("lokr_w1" in f for f in forms) and any("lokr_w1_a" in f for f in forms)


def test_loha_then_loha_and_lokr_stacked_equal_peft_then_restore_exactly(sd_engine, sd_case) -> None:  # type: ignore[no-untyped-def]
    pipe, files = sd_case
    before = sd_engine.generate(_req())
    plain = _floats(before)
    assert np.abs(plain - _reference(pipe, {})).max() <= TOL
    one = _floats(sd_engine.generate(_req(loras=(LoraUse(str(files["loha"]), 0.8),))))
    assert np.abs(one - _reference(pipe, {"loha": 0.8})).max() <= TOL
    assert np.abs(one - plain).max() > 0.01
    two = _floats(sd_engine.generate(_req(loras=(LoraUse(str(files["loha"]), 0.8), LoraUse(str(files["lokr"]), -0.6)))))
    assert np.abs(two - _reference(pipe, {"loha": 0.8, "lokr": -0.6})).max() <= TOL
    assert np.abs(two - one).max() > 0.01
    parts = sd_engine.components
    weights = {k: v.clone() for k, v in parts.unet_model.state_dict().items()}
    assert sd_engine.generate(_req()).images[0].image.tobytes() == before.images[0].image.tobytes()
    assert all(torch.equal(v, weights[k]) for k, v in parts.unet_model.state_dict().items())  # never touched
    assert not any(m._forward_hooks for m in parts.unet_model.modules())


def test_lycoris_next_to_a_plain_lora_and_weight_changes_do_not_reload(  # type: ignore[no-untyped-def]
    sd_engine, sd_case, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import heyim_desktop.core.lycoris as lycoris
    from lora_helpers import write_lora

    _, files = sd_case
    lora = write_lora(tiny_model, tmp_path / "plain.safetensors", layout="kohya", seed=4)
    before = sd_engine.generate(_req()).images[0].image.tobytes()
    mixed = (LoraUse(str(lora), 0.7), LoraUse(str(files["lokr"]), 0.5))
    a = sd_engine.generate(_req(loras=mixed)).images[0].image.tobytes()
    calls: list[Path] = []
    original = lycoris.read_lycoris
    monkeypatch.setattr(lycoris, "read_lycoris", lambda p: (calls.append(p), original(p))[1])
    b = sd_engine.generate(_req(loras=(mixed[0], LoraUse(str(files["lokr"]), -0.5)))).images[0].image.tobytes()
    assert calls == [] and a != b and a != before
    assert sd_engine.generate(_req(loras=mixed)).images[0].image.tobytes() == a
    assert sd_engine.generate(_req()).images[0].image.tobytes() == before


def test_bad_lycoris_files_are_refused_clearly(sd_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    def attempt(name: str, tensors: dict[str, torch.Tensor]) -> str:
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(ModelError) as info:
            sd_engine.generate(_req(loras=(LoraUse(str(path)),)))
        return str(info.value)

    z = torch.zeros
    wrong = {"lora_unet_conv_in.hada_w1_a": z(32, 4), "lora_unet_conv_in.hada_w1_b": z(4, 16),
             "lora_unet_conv_in.hada_w2_a": z(32, 4), "lora_unet_conv_in.hada_w2_b": z(4, 16)}
    assert "does not fit" in attempt("wrong-shape", wrong)
    other = {"lora_unet_no_such_layer.hada_w1_a": z(2, 2), "lora_unet_no_such_layer.hada_w1_b": z(2, 2),
             "lora_unet_no_such_layer.hada_w2_a": z(2, 2), "lora_unet_no_such_layer.hada_w2_b": z(2, 2)}
    assert "does not have (lora_unet_no_such_layer)" in attempt("other-model", other)
    assert "lacks hada_w2_a, hada_w2_b" in attempt("cut", {"lora_unet_x.hada_w1_a": z(2, 2), "lora_unet_x.hada_w1_b": z(2, 2)})
    assert "OFT" in attempt("oft", {"lora_unet_x.oft_blocks": z(2, 2, 2)})
    assert "DoRA" in attempt("dora", {"lora_unet_x.hada_w1_a": z(2, 2), "lora_unet_x.dora_scale": z(2)})
    assert sd_engine.generate(_req()).images  # still works after the refusals


def test_sgm_names_map_to_diffusers_modules() -> None:
    up = [True, True, False]  # SDXL's up blocks: two with attention, then a plain one
    for path in ("down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q", "down_blocks.0.resnets.1.conv1",
                 "down_blocks.0.downsamplers.0.conv", "mid_block.resnets.1.time_emb_proj", "mid_block.attentions.0.proj_in",
                 "up_blocks.0.resnets.2.conv_shortcut", "up_blocks.1.attentions.2.proj_out", "up_blocks.1.upsamplers.0.conv",
                 "up_blocks.2.resnets.0.conv2", "conv_in", "conv_out", "add_embedding.linear_2", "time_embedding.linear_1"):
        sgm = sgm_name(path, 2, up).replace(".", "_")
        assert sgm_to_diffusers(sgm, 2, up) == path.replace(".", "_"), (path, sgm)


@pytest.mark.slow  # builds peft LoHa/LoKr layers on the tiny SDXL's UNet and both encoders, three SDXL runs each side
def test_sdxl_loha_and_lokr_with_sgm_names_equal_peft(tiny_sdxl: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    from heyim_desktop.core.torch_engine import load_torch_engine

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)
    sgm = (int(pipe.unet.config.layers_per_block), ["CrossAttn" in t for t in pipe.unet.config.up_block_types])
    files = {}
    for i, algo in enumerate(("loha", "lokr")):
        kw = dict(rank=RANK[algo], alpha=ALPHA[algo], std=STD[algo])
        layers = kohya_names(inject_peft_lycoris(pipe.unet, algo, algo, targets=LYCO_UNET, seed=30 + i, **kw),  # type: ignore[arg-type]
                             "lora_unet_", sgm=sgm)
        for prefix, encoder, seed in (("lora_te1_", pipe.text_encoder, 40 + i), ("lora_te2_", pipe.text_encoder_2, 50 + i)):
            layers.update(kohya_names(inject_peft_lycoris(encoder, algo, algo, targets=LYCO_TE, seed=seed, **kw),  # type: ignore[arg-type]
                                      prefix, text=True))
        assert any(k.startswith("lora_unet_input_blocks_4_1_") for k in layers)
        assert any(k.startswith("lora_unet_output_blocks_") for k in layers)
        files[algo] = write_lycoris(tmp_path / f"xl-{algo}.safetensors", layers, algo=algo, rank=RANK[algo],
                                    alpha=ALPHA[algo])
        assert inspect_network_file(files[algo]).family == "sdxl"
    engine = load_torch_engine(tiny_sdxl, device="cpu")
    try:
        before = engine.generate(_req()).images[0].image.tobytes()
        loha = _floats(engine.generate(_req(loras=(LoraUse(str(files["loha"]), 0.8),))))
        assert np.abs(loha - _reference(pipe, {"loha": 0.8})).max() <= TOL
        both = _floats(engine.generate(_req(loras=(LoraUse(str(files["loha"]), 0.8), LoraUse(str(files["lokr"]), -0.6)))))
        assert np.abs(both - _reference(pipe, {"loha": 0.8, "lokr": -0.6})).max() <= TOL
        assert np.abs(both - loha).max() > 0.01
        assert engine.generate(_req()).images[0].image.tobytes() == before
    finally:
        engine.close()


def test_baking_merges_loha_and_lokr_into_the_weights(tiny_model: Path, sd_case) -> None:  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from heyim_desktop.core.lora_torch import NetworkPatcher, bake_modules

    _, files = sd_case
    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    te = CLIPTextModel.from_pretrained(tiny_model / "text_encoder")
    tok = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    vae = AutoencoderKL.from_pretrained(tiny_model, subfolder="vae")
    uses = (LoraUse(str(files["loha"]), 0.8), LoraUse(str(files["lokr"]), -0.6))
    gen = torch.Generator().manual_seed(0)
    x, ctx, ids = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 5, 32, generator=gen), torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        plain = unet(x, 10, ctx).sample
        patcher = NetworkPatcher(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, family="sd1")
        patcher.apply(uses)
        runtime, runtime_te = unet(x, 10, ctx).sample, te(ids)[0]
        patcher.apply(())
        bake_modules(unet=unet, vae=vae, text_encoders=[te], tokenizers=[tok], family="sd1", loras=uses)
        assert not any(m._forward_hooks for m in (*unet.modules(), *te.modules()))
        baked, baked_te = unet(x, 10, ctx).sample, te(ids)[0]
    assert (baked - runtime).abs().max() <= TOL and (baked_te - runtime_te).abs().max() <= TOL
    assert (baked - plain).abs().max() > 0.01
