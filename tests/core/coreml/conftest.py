"""Core ML fixtures: the tiny model converted once per session, in two shapes.

* ``coreml_model``: through the CLI, Apple's default shape: split_einsum, batch 2, one Unet,
  with VAEEncoder.
* ``coreml_chunked``: through the API, the other shape: original attention, batch 1,
  UnetChunk1 + UnetChunk2, no VAEEncoder; its TextEncoder and VAEDecoder are reused from
  ``coreml_model`` (same weights, same size), as a user making a second variant would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def conversion_log() -> dict[str, object]:
    return {}


@pytest.fixture(scope="session")
def coreml_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, conversion_log: dict[str, object]) -> Path:
    import contextlib
    import io

    from heyim_desktop import cli

    out = tmp_path_factory.mktemp("coreml") / "tiny-coreml"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["convert", str(tiny_model), str(out)])
    conversion_log["cli"] = (code, stdout.getvalue(), stderr.getvalue())
    assert code == 0, stderr.getvalue()
    return out


@pytest.fixture(scope="session")
def coreml_chunked(
    tiny_model: Path, coreml_model: Path, tmp_path_factory: pytest.TempPathFactory, conversion_log: dict[str, object]
) -> Path:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    stages: list[object] = []
    out = convert_to_coreml(
        tiny_model,
        tmp_path_factory.mktemp("coreml") / "tiny-coreml-chunked",
        attention="original",
        batch=1,
        chunk_unet=True,
        include_encoder=False,
        reuse_from=coreml_model,
        progress=stages.append,
    )
    conversion_log["api"] = stages
    return out


@pytest.fixture()
def model_copy(coreml_model: Path, tmp_path: Path) -> Path:
    """A private copy to break (remove files) without touching the session's model."""
    dest = tmp_path / coreml_model.name
    shutil.copytree(coreml_model, dest)
    return dest


#: diffusers' tiny SDXL UNet (tests/pipelines/stable_diffusion_xl, get_dummy_components).
TINY_SDXL_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=1,
)


def build_tiny_sdxl(dest: Path) -> Path:
    """A tiny random SDXL base in diffusers format: two CLIP encoders (the second with a
    projection and a tokenizer padding with "!"), a text_time UNet, an 8x VAE with SDXL's scale."""
    import json

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from heyim_desktop.core.demo_model import write_tokenizer

    vocab_size = write_tokenizer(dest / "tokenizer")
    write_tokenizer(dest / "tokenizer_2")
    config_path = dest / "tokenizer_2" / "tokenizer_config.json"
    tok2 = json.loads(config_path.read_text())
    tok2["pad_token"] = "!"
    config_path.write_text(json.dumps(tok2))
    ids = json.loads((dest / "tokenizer" / "vocab.json").read_text())
    torch.manual_seed(0)
    UNet2DConditionModel(**TINY_SDXL_UNET).save_pretrained(dest / "unet", safe_serialization=True)
    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(32, 32, 64, 64), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=32, sample_size=256,
        scaling_factor=0.13025, force_upcast=True,
    ).save_pretrained(dest / "vae", safe_serialization=True)
    text = dict(
        bos_token_id=ids["<|startoftext|>"], eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=vocab_size, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
    )
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(dest / "text_encoder", safe_serialization=True)
    torch.manual_seed(1)
    CLIPTextModelWithProjection(CLIPTextConfig(**text)).save_pretrained(dest / "text_encoder_2", safe_serialization=True)
    EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
        num_train_timesteps=1000,
    ).save_pretrained(dest / "scheduler")
    index = {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.30.0", "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "image_encoder": [None, None], "feature_extractor": [None, None],
    }
    (dest / "model_index.json").write_text(json.dumps(index, indent=2))
    return dest


@pytest.fixture(scope="session")
def coreml_sdxl_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl-coreml-source")


@pytest.fixture(scope="session")
def coreml_sdxl(coreml_sdxl_source: Path, tmp_path_factory: pytest.TempPathFactory, conversion_log: dict[str, object]) -> Path:
    """The tiny SDXL converted once per session (split_einsum, batch 2, with VAEEncoder)."""
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    stages: list[object] = []
    out = convert_to_coreml(coreml_sdxl_source, tmp_path_factory.mktemp("coreml") / "tiny-sdxl-coreml", progress=stages.append)
    conversion_log["sdxl"] = stages
    return out
