"""Torch modules with Apple's Core ML Stable Diffusion input/output contract.

They are what ``convert`` traces into ``.mlpackage`` files, and what the Linux tests run as a
stand-in for Core ML prediction, so both sides share one definition of every name and layout:

* TextEncoder: ``input_ids`` float32 (1, 77) -> ``last_hidden_state`` (1, 77, C), ``pooled_outputs`` (1, C)
* Unet: ``sample`` (B, 4, h, w), ``timestep`` (B,), ``encoder_hidden_states`` (B, C, 1, 77) -> ``noise_pred``
* UnetChunk1 / UnetChunk2: the same UNet cut after its middle block; chunk 1's outputs feed
  chunk 2 by name.
* VAEDecoder: ``z`` (1, 4, h, w) -> ``image`` (1, 3, 8h, 8w); VAEEncoder: ``x`` -> ``latent`` (moments).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TEXT_LENGTH = 77


class SplitEinsumAttnProcessor:
    """Attention head by head with rank-4 einsums on a (B, S, 1, d) layout.

    This is the shape of Apple's ANE-friendly "split_einsum" attention: Core ML keeps the
    ``nchw,nwhu->nchu`` einsum as one op the Neural Engine runs well, and no tensor is wider
    than one head.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.to_q(hidden_states)
        k = attn.to_k(context)
        v = attn.to_v(context)
        heads = attn.heads
        dim = q.shape[-1] // heads
        b, sq, _ = q.shape
        sk = k.shape[1]
        # One reshape and one split per tensor keeps the converted program small.
        qs = q.reshape(b, sq, 1, heads * dim).split(dim, dim=3)  # heads x (B, Sq, 1, d)
        ks = k.transpose(1, 2).reshape(b, heads * dim, 1, sk).split(dim, dim=1)  # heads x (B, d, 1, Sk)
        vs = v.reshape(b, sk, 1, heads * dim).split(dim, dim=3)  # heads x (B, Sk, 1, d)
        outs = []
        for qh, kh, vh in zip(qs, ks, vs):
            weights = torch.einsum("nchw,nwhu->nchu", qh, kh) * attn.scale
            weights = weights.softmax(dim=-1)
            outs.append(torch.einsum("nchw,nwhu->nchu", weights, vh))
        out = torch.cat(outs, dim=3).reshape(b, sq, heads * dim)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + hidden_states
        scaled: torch.Tensor = out / attn.rescale_output_factor
        return scaled


def use_attention(unet: nn.Module, attention: str) -> None:
    """Set a diffusers UNet's attention processor: ``split_einsum`` (the layout HeyIm's
    converter wrote before the Neural Engine UNet; kept to measure against) or ``original``."""
    if attention == "split_einsum":
        unet.set_attn_processor(SplitEinsumAttnProcessor())  # type: ignore[operator]
    elif attention == "original":
        from diffusers.models.attention_processor import AttnProcessor

        # The plain matmul/softmax form: Core ML runs it best on the GPU.
        unet.set_attn_processor(AttnProcessor())  # type: ignore[operator]
    else:
        raise ValueError(f"unknown attention {attention!r}")


def unet_for(unet: nn.Module, attention: str) -> nn.Module:
    """The UNet a conversion traces: the Neural Engine layout for ``split_einsum``
    (:mod:`~heyim_desktop.core.coreml.ane`), diffusers' own with plain attention for ``original``."""
    if attention == "split_einsum":
        from heyim_desktop.core.coreml.ane import ane_unet

        ours = ane_unet(unet)
        ours._heyim_channels_first_text = True  # type: ignore[assignment]
        return ours
    use_attention(unet, attention)
    return unet


def _text_for(unet: nn.Module, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    # The Neural Engine UNet takes Apple's (B, C, 1, 77) as it is; diffusers' wants (B, 77, C).
    if getattr(unet, "_heyim_channels_first_text", False):
        return encoder_hidden_states
    return encoder_hidden_states.squeeze(2).transpose(1, 2)


class TextEncoderModule(nn.Module):
    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.text_encoder(input_ids.to(torch.int32).long(), return_dict=False)
        return out[0], out[1]


class TextEncoderXLModule(nn.Module):
    """SDXL's text encoders in Apple's layout: ``input_ids`` -> ``hidden_embeds`` (the penultimate
    layer, what SDXL's UNet reads) and ``pooled_outputs`` (the projected text for TextEncoder2)."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out: Any = self.text_encoder(input_ids.to(torch.int32).long(), output_hidden_states=True, return_dict=True)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return out.hidden_states[-2], pooled


class UnetModule(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        ehs = _text_for(self.unet, encoder_hidden_states)
        pred: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=ehs, return_dict=False)[0]
        return pred


class UnetXLModule(nn.Module):
    """SDXL's UNet in Apple's layout: the SD inputs plus ``time_ids`` and ``text_embeds``.

    ``time_ids`` arrive in whatever shape the model declares ((B, 6), or flat (B * 6,)); the
    UNet reads them as (B, n).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
        time_ids: torch.Tensor, text_embeds: torch.Tensor,
    ) -> torch.Tensor:
        ehs = _text_for(self.unet, encoder_hidden_states)
        added = {"text_embeds": text_embeds, "time_ids": time_ids.reshape(sample.shape[0], -1)}
        pred: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=ehs, added_cond_kwargs=added, return_dict=False)[0]
        return pred


def _crossattn(block: nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


class UnetChunk1Module(nn.Module):
    """Time embedding, input conv, down blocks and middle block of a diffusers UNet."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        u: Any = self.unet
        ehs = _text_for(u, encoder_hidden_states)
        t_emb = u.get_time_embed(sample=sample, timestep=timestep)
        emb = u.time_embedding(t_emb, None)
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        h = u.conv_in(sample)
        residuals: tuple[torch.Tensor, ...] = (h,)
        for block in u.down_blocks:
            if _crossattn(block):
                h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=ehs)
            else:
                h, res = block(hidden_states=h, temb=emb)
            residuals += res
        if u.mid_block is not None:
            h = u.mid_block(h, emb, encoder_hidden_states=ehs) if _crossattn(u.mid_block) else u.mid_block(h, emb)
        return (emb, h, *residuals)


class UnetChunk2Module(nn.Module):
    """The up blocks and output conv, fed by chunk 1's outputs."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, encoder_hidden_states: torch.Tensor, emb: torch.Tensor, mid: torch.Tensor, *residuals: torch.Tensor) -> torch.Tensor:
        u: Any = self.unet
        ehs = _text_for(u, encoder_hidden_states)
        h = mid
        rest = tuple(residuals)
        for i, block in enumerate(u.up_blocks):
            n = len(block.resnets)
            res, rest = rest[-n:], rest[:-n]
            size = rest[-1].shape[2:] if i < len(u.up_blocks) - 1 else None
            if _crossattn(block):
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ehs, upsample_size=size)
            else:
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
        if u.conv_norm_out is not None:
            h = u.conv_act(u.conv_norm_out(h))
        pred: torch.Tensor = u.conv_out(h)
        return pred


def chunk_residual_count(unet: nn.Module) -> int:
    u: Any = unet
    return 1 + sum(len(b.resnets) + (1 if getattr(b, "downsamplers", None) else 0) for b in u.down_blocks)


def chunk1_output_names(unet: nn.Module) -> list[str]:
    return ["emb", "mid"] + [f"res_{i}" for i in range(chunk_residual_count(unet))]


class VAEDecoderModule(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image: torch.Tensor = self.vae.decode(z, return_dict=False)[0]  # type: ignore[operator]
        return image


class VAEEncoderModule(nn.Module):
    """Pixels in [-1, 1] to the latent distribution's moments (mean and log-variance)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v: Any = self.vae
        h = v.encoder(x)
        moments: torch.Tensor = v.quant_conv(h) if v.quant_conv is not None else h
        return moments


class NoisedVAEEncoderModule(nn.Module):
    """Apple's first VAEEncoder contract: it samples, scales and noises the latent itself.

    ``sample`` (1, 3, H, W), ``diagonal_noise`` and ``noise`` (1, 4, h, w), the two alphas as
    broadcastable arrays -> ``sqrt_a * s * (mean + std * diagonal_noise) + sqrt_1ma * noise``.
    HeyIm never writes this form; it exists so the tests can predict for such a model.
    """

    def __init__(self, vae: nn.Module, scaling_factor: float) -> None:
        super().__init__()
        self.moments = VAEEncoderModule(vae)
        self.scaling_factor = scaling_factor

    def forward(
        self,
        sample: torch.Tensor,
        diagonal_noise: torch.Tensor,
        noise: torch.Tensor,
        sqrt_alphas_cumprod: torch.Tensor,
        sqrt_one_minus_alphas_cumprod: torch.Tensor,
    ) -> torch.Tensor:
        mean, logvar = torch.chunk(self.moments(sample), 2, dim=1)
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        latent = (mean + std * diagonal_noise) * self.scaling_factor
        return sqrt_alphas_cumprod * latent + sqrt_one_minus_alphas_cumprod * noise


#: Apple's ControlNet contract: the residuals a ControlNet returns and a ControlledUnet takes,
#: down blocks first, the middle block last.
RESIDUAL_PREFIX = "additional_residual_"


def residual_names(count: int) -> list[str]:
    return [f"{RESIDUAL_PREFIX}{i}" for i in range(count)]


class ControlledUnetModule(nn.Module):
    """Apple's ControlledUnet: the SD inputs plus ``additional_residual_0..n-1`` added to the
    UNet's skip connections and middle block (all zeros: the plain UNet, exactly)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                *residuals: torch.Tensor) -> torch.Tensor:
        ehs = _text_for(self.unet, encoder_hidden_states)
        pred: torch.Tensor = self.unet(
            sample, timestep, encoder_hidden_states=ehs, down_block_additional_residuals=tuple(residuals[:-1]),
            mid_block_additional_residual=residuals[-1], return_dict=False,
        )[0]
        return pred


class ControlNetModule(nn.Module):
    """Apple's ControlNet: ``sample``, ``timestep``, ``encoder_hidden_states`` (B, C, 1, 77) and
    ``controlnet_cond`` (B, 3, H, W) in [0, 1] -> the unscaled residuals (weight, guess mode and
    start/end are the engine's, as in Apple's pipeline)."""

    def __init__(self, controlnet: nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                controlnet_cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ehs = encoder_hidden_states.squeeze(2).transpose(1, 2)
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=ehs, controlnet_cond=controlnet_cond,
                                    conditioning_scale=1.0, return_dict=False)
        return (*down, mid)
