"""The Neural Engine UNet (core/coreml/ane.py): equal to diffusers, and its converted program's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from heyim_desktop.core.coreml import ane

#: diffusers' tiny SDXL UNet (tests/pipelines/stable_diffusion_xl, get_dummy_components).
TINY_SDXL_UNET: dict[str, Any] = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=1,
)


def _tiny_sdxl_unet() -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**TINY_SDXL_UNET).eval()


def _compare(unet: Any, latent: int, monkeypatch: pytest.MonkeyPatch, xl: bool = False) -> tuple[float, list[int]]:
    ours = ane.ane_unet(unet)
    assert not any(isinstance(m, torch.nn.Linear) for m in ours.modules())
    queries: list[int] = []
    real = ane._attention_scores

    def spy(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        queries.append(int(q.shape[3]))
        return real(q, k_t, v)

    monkeypatch.setattr(ane, "_attention_scores", spy)
    gen = torch.Generator().manual_seed(3)
    ctx = int(unet.config.cross_attention_dim)
    x = torch.randn(2, 4, latent, latent, generator=gen)
    t = torch.tensor([981.0, 981.0])
    text = torch.randn(2, 77, ctx, generator=gen)
    kw: dict[str, Any] = {}
    if xl:
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32, generator=gen), "time_ids": torch.tensor([[256.0, 256, 0, 0, 256, 256]] * 2)}
    with torch.no_grad():
        theirs = unet(x, t, encoder_hidden_states=text, return_dict=False, **kw)[0]
        mine = ours(x, t, encoder_hidden_states=text.transpose(1, 2).unsqueeze(2), return_dict=False, **kw)[0]
    return float((theirs - mine).abs().max()), queries


@pytest.mark.parametrize("latent", [32, 64])
def test_equals_diffusers_on_the_tiny_sd_unet(tiny_model: Path, latent: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet").eval()
    diff, queries = _compare(unet, latent, monkeypatch)
    assert diff <= 1e-4
    # 64x64 latents put 32x32 = 1024 tokens in the attention level: queries go in chunks of 512.
    assert max(queries) == (256 if latent == 32 else ane.QUERY_CHUNK)


@pytest.mark.parametrize("latent", [32, 64])
def test_equals_diffusers_on_the_tiny_sdxl_unet(latent: int, monkeypatch: pytest.MonkeyPatch) -> None:
    diff, queries = _compare(_tiny_sdxl_unet(), latent, monkeypatch, xl=True)
    assert diff <= 1e-4
    assert max(queries) == (256 if latent == 32 else ane.QUERY_CHUNK)


def test_state_dict_mapping_is_explicit(tiny_model: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    ours = ane.ane_unet(unet).state_dict()
    theirs = unet.state_dict()
    key = "down_blocks.1.attentions.0.transformer_blocks.0"
    assert torch.equal(ours[f"{key}.attn1.to_q.weight"][:, :, 0, 0], theirs[f"{key}.attn1.to_q.weight"])
    assert torch.equal(ours[f"{key}.ff.proj.weight"][:, :, 0, 0], theirs[f"{key}.ff.net.0.proj.weight"])
    assert torch.equal(ours[f"{key}.attn2.to_out.bias"], theirs[f"{key}.attn2.to_out.0.bias"])
    assert torch.equal(ours["time_embedding.linear_1.conv.weight"][:, :, 0, 0], theirs["time_embedding.linear_1.weight"])
    with pytest.raises(KeyError, match="no place for diffusers weight 'extra.weight'"):
        ane.ane_state_dict({**theirs, "extra.weight": torch.zeros(1)}, ours)
    with pytest.raises(KeyError, match="has no weights for"):
        ane.ane_state_dict({k: v for k, v in theirs.items() if not k.startswith("conv_out")}, ours)


def test_unsupported_transformer_is_refused(tiny_model: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.residual_connection = True
    with pytest.raises(ValueError, match="does not cover"):
        ane.ane_unet(unet)


def test_converted_program_has_the_neural_engine_layout(coreml_model: Path) -> None:
    from heyim_desktop.core.coreml.program import package_figures

    figures = package_figures(coreml_model / "Unet.mlpackage")
    # The converter's split_einsum before this layout: 74 linear ops and 164 rank-3 tensors.
    assert figures.count("linear") == 0 and figures.count("matmul") == 0
    assert figures.rank3 == 0
    # Two einsums per head (6 transformer blocks x 2 attentions x 8 heads), softmax per head.
    assert figures.count("einsum") == 192 and figures.count("softmax") == 96
    # One transpose per attention (the keys onto the channel axis), none elsewhere.
    assert figures.count("transpose") == 12
    assert figures.output_dtypes == {"noise_pred": "fp32"}
    dtypes = figures.tensor_dtypes
    assert dtypes["fp16"] > 20 * dtypes.get("fp32", 0), dtypes
    assert figures.largest[1] == (2, 512, 1, 256)  # the feed-forward at 16x16 latents
