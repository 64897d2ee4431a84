"""SDXL LoRAs (kohya sd-scripts' SGM naming, and the diffusers layout) on the tiny SDXL, against
diffusers' StableDiffusionXLPipeline + load_lora_weights + set_adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.lora import LoraUse, inspect_network_file
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import build_scheduler
from lora_helpers import write_sdxl_diffusers_lora, write_sdxl_kohya_lora

#: The images compared are 8-bit: one level (1/255) is where float rounding of ~1e-7 lands on a
#: rounding boundary; anything more is a real difference.
TOL = 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def xl_loras(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xl-loras")
    return {
        "kohya": write_sdxl_kohya_lora(tiny_sdxl, root / "xl-kohya.safetensors", seed=1, alpha=2.0),
        "diffusers": write_sdxl_diffusers_lora(tiny_sdxl, root / "xl-diffusers.safetensors", seed=5),
    }


@pytest.fixture(scope="module")
def xl_engine(tiny_sdxl: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    e = load_torch_engine(tiny_sdxl, device="cpu")
    yield e
    e.close()


@pytest.fixture(scope="module")
def xl_reference(tiny_sdxl: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = build_scheduler("Euler a", pipe.scheduler.config)

    def run(files: list[tuple[Path, float]]) -> np.ndarray:
        pipe.unload_lora_weights()
        names = []
        for i, (path, _) in enumerate(files):
            pipe.load_lora_weights(str(path), adapter_name=f"a{i}")
            names.append(f"a{i}")
        if names:
            pipe.set_adapters(names, adapter_weights=[w for _, w in files])
        out = pipe("a red fox", negative_prompt="blurry", num_inference_steps=2, guidance_scale=6.0, height=64,
                   width=64, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
        return np.round(out * 255) / 255  # as our PNG-bound images are rounded

    return run


def _req(**kw: object) -> GenerationRequest:
    base = dict(prompt="a red fox", negative_prompt="blurry", steps=2, guidance=6.0, seed=5, width=64, height=64,
                scheduler="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def _floats(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) / 255.0 for g in result.images])


def test_files_are_recognised_as_sdxl(xl_loras: dict[str, Path]) -> None:
    for layout, path in xl_loras.items():
        info = inspect_network_file(path)
        assert (info.kind, info.layout, info.family) == ("lora", layout, "sdxl")


def test_kohya_sdxl_lora_equals_diffusers_and_lands_on_the_right_modules(  # type: ignore[no-untyped-def]
    xl_engine, xl_reference, xl_loras: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    plain = _floats(xl_engine.generate(_req()))
    ours = _floats(xl_engine.generate(_req(loras=(LoraUse(str(xl_loras["kohya"]), 0.8),))))
    assert np.abs(ours - xl_reference([(xl_loras["kohya"], 0.8)])).max() <= TOL
    assert np.abs(ours - plain).max() > 0.01
    # The SGM names reached the modules they name (checked against the file, not against diffusers).
    parts = xl_engine.components
    name = parts._networks.active[0]
    file = load_file(str(xl_loras["kohya"]))
    expect = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
            parts.unet_model.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q,
        "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_k":
            parts.unet_model.mid_block.attentions[0].transformer_blocks[1].attn2.to_k,
        "lora_unet_output_blocks_2_1_proj_out": parts.unet_model.up_blocks[0].attentions[2].proj_out,
        "lora_te1_text_model_encoder_layers_3_self_attn_v_proj": dict(parts.text_encoder.named_modules())[
            "encoder.layers.3.self_attn.v_proj"],
        "lora_te2_text_model_encoder_layers_4_mlp_fc2": dict(parts.text_encoder_2.named_modules())[
            "text_model.encoder.layers.4.mlp.fc2"],
    }
    for key, module in expect.items():
        assert torch.equal(module.lora_A[name].weight, file[f"{key}.lora_down.weight"].float()), key
        assert torch.equal(module.lora_B[name].weight, file[f"{key}.lora_up.weight"].float()), key


@pytest.mark.slow  # four tiny-SDXL generations and diffusers' reference (~10 s on 2 cores)
def test_two_stacked_sdxl_loras_then_unloaded_exactly(xl_engine, xl_reference, xl_loras: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    before = xl_engine.generate(_req()).images[0].image.tobytes()
    uses = (LoraUse(str(xl_loras["kohya"]), 0.8), LoraUse(str(xl_loras["diffusers"]), -0.5))
    ours = _floats(xl_engine.generate(_req(loras=uses)))
    assert np.abs(ours - xl_reference([(xl_loras["kohya"], 0.8), (xl_loras["diffusers"], -0.5)])).max() <= TOL
    assert np.abs(ours - _floats(xl_engine.generate(_req(loras=uses[:1])))).max() > 0.01  # both count
    assert xl_engine.generate(_req()).images[0].image.tobytes() == before
