"""Single-file checkpoints load through load_engine with the configs HeyIm ships, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from heyim_desktop.core.checkpoint import profile_config_dir
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.loading import load_engine
from heyim_desktop.core.request import GenerationRequest


def test_single_file_generates_like_the_diffusers_folder(data_dir: Path, tiny_single_file: Path, tiny_engine) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    engine = load_engine(str(tiny_single_file), device="cpu")
    try:
        req = GenerationRequest(prompt="a red fox", steps=2, width=64, height=64, seed=5, model=str(tiny_single_file))
        a = np.asarray(engine.generate(req).images[0].image, dtype=np.int16)
        b = np.asarray(tiny_engine.generate(req).images[0].image, dtype=np.int16)
    finally:
        engine.close()
    assert engine.model_name == "tiny-a1111"
    assert np.abs(a - b).max() <= 1  # same weights, same pixels


def test_corrupt_single_file_is_refused_before_torch_reads_it(tmp_path: Path, tiny_single_file: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_single_file.read_bytes()[:-100])
    with pytest.raises(ModelError, match="truncated"):
        load_engine(str(cut), device="cpu")


@pytest.mark.parametrize("profile", ["sd1", "sd2", "sd2-v"])
def test_shipped_configs_build_the_real_architectures(data_dir: Path, profile: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = profile_config_dir(profile)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder", local_files_only=True))
    params = sum(p.numel() for p in unet.parameters())
    assert 859e6 < params < 870e6  # SD 1.x/2.x UNets are ~860M parameters
    assert 83e6 < sum(p.numel() for p in vae.parameters()) < 84e6
    assert sum(p.numel() for p in text.parameters()) > 120e6
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
