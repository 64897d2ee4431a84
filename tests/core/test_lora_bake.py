"""Baking LoRAs into a model (for Core ML) and Core ML's refusal of run-time LoRAs."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.lora import EmbeddingUse, LoraUse
from heyim_desktop.core.request import GenerationRequest
from lora_helpers import write_lora

TOL = 1e-4


def _req(**kw: object) -> GenerationRequest:
    base = dict(prompt="a red fox", negative_prompt="blurry", steps=3, guidance=6.0, seed=5, width=64, height=64,
                scheduler="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def test_baked_loras_equal_the_run_time_loras(tiny_model: Path, tmp_path: Path) -> None:
    """UNet and text encoder outputs (floats) of the baked model equal the run-time LoRA's."""
    import torch

    from heyim_desktop.core.lora_torch import NetworkPatcher, bake_loras
    from heyim_desktop.core.torch_engine import TorchComponents

    uses = (LoraUse(str(write_lora(tiny_model, tmp_path / "a.safetensors", seed=1)), 0.7),
            LoraUse(str(write_lora(tiny_model, tmp_path / "b.safetensors", layout="kohya", seed=2)), -0.5))
    runtime = TorchComponents(tiny_model, torch.device("cpu"), torch.float32)
    NetworkPatcher(unet=runtime.unet_model, vae=runtime.vae, text_encoder=runtime.text_encoder,
                   tokenizer=runtime.tokenizer, family="sd1").apply(uses)
    baked = TorchComponents(tiny_model, torch.device("cpu"), torch.float32)
    plain = TorchComponents(tiny_model, torch.device("cpu"), torch.float32)
    bake_loras(baked, uses)
    # no LoRA layers are left: the modules are plain again, the LoRAs inside their weights
    assert not any("lora" in name for name, _ in baked.unet_model.named_modules())
    assert not any("lora" in name for name, _ in baked.text_encoder.named_modules())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(plain.text_encoder.config.vocab_size), (1, 77), generator=gen)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    cross = int(plain.unet_model.config.cross_attention_dim)
    hidden = torch.randn(1, 77, cross, generator=gen)
    outs = {}
    with torch.no_grad():
        for name, parts in (("runtime", runtime), ("baked", baked), ("plain", plain)):
            te = parts.text_encoder(ids)[0]
            unet = parts.unet_model(sample, torch.tensor([500]), encoder_hidden_states=hidden).sample
            outs[name] = (te, unet)
    for i in (0, 1):
        assert (outs["baked"][i] - outs["runtime"][i]).abs().max().item() <= TOL
        assert (outs["baked"][i] - outs["plain"][i]).abs().max().item() > 0.01


def test_a_core_ml_model_refuses_loras_saying_how_to_bake() -> None:
    from heyim_desktop.core.lora_torch import refuse_networks

    with pytest.raises(ModelError, match=r"convert MODEL OUT --lora FILE:WEIGHT.*Convert to Core ML"):
        refuse_networks(_req(loras=(LoraUse("/x/ink.safetensors", 0.8),)), "Core ML")
    with pytest.raises(ModelError, match="embeddings cannot be added"):
        refuse_networks(_req(embeddings=(EmbeddingUse("/x/e.safetensors", "easyneg"),)), "Core ML")
    clean = refuse_networks(_req(prompt="a fox <lora:gone:1>, snow"), "Core ML")
    assert clean.prompt == "a fox, snow"


def test_coreml_components_refuse_a_request_with_a_lora(tmp_path: Path) -> None:
    from heyim_desktop.core.coreml.components import CoreMLComponents

    refuse = CoreMLComponents.prepare_networks
    with pytest.raises(ModelError, match="compiled Core ML model"):
        refuse(object.__new__(CoreMLComponents), _req(loras=(LoraUse("/x/ink.safetensors", 0.8),)))


@pytest.mark.slow
def test_convert_with_lora_bakes_it_and_records_it(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    from heyim_desktop import cli
    from heyim_desktop.core.coreml.convert import META_LORAS, META_WEIGHTS
    from heyim_desktop.core.coreml.specs import read_model_spec

    lora = write_lora(tiny_model, tmp_path / "inkwash.safetensors", seed=4)
    out = tmp_path / "tiny-ink"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["convert", str(tiny_model), str(out), "--no-encoder", "--batch", "1",
                         "--lora", f"{lora}:0.8"])
    assert code == 0, err.getvalue()
    unet = read_model_spec("Unet", out / "Unet.mlpackage")
    te = read_model_spec("TextEncoder", out / "TextEncoder.mlpackage")
    assert unet.meta(META_LORAS) == te.meta(META_LORAS) == "inkwash:0.8"
    # the text encoder with the LoRA in it is not the source's (a later conversion never reuses it as such)
    from heyim_desktop.core.coreml.convert import _weights_id

    assert te.meta(META_WEIGHTS) != _weights_id(tiny_model / "text_encoder")
    with contextlib.redirect_stderr(err):
        assert cli.main(["convert", str(tiny_model), str(tmp_path / "x"), "--lora", "nope:1"]) != 0
    assert "'nope' is neither a .safetensors file nor a LoRA" in err.getvalue()
    assert not (tmp_path / "x").exists()
