"""A Stable Diffusion UNet laid out for the Apple Neural Engine, built from a diffusers UNet.

The Neural Engine works on 4-D tensors with channels first and the sequence on the last axis,
runs 1x1 convolutions far better than matrix multiplies of rank-3 tensors, and needs large
attention maps cut into pieces. Apple has published these principles for transformers on the
Neural Engine; this module applies them, in our own code, to the parts of the UNet that change:

* every transformer (``Transformer2DModel``) runs in (B, C, 1, S) from its input projection
  to its output projection, with no (B, S, C) tensor in between;
* every linear layer is a 1x1 ``Conv2d`` whose weight is the linear weight with two singleton
  axes (:func:`ane_state_dict` maps a diffusers state dict onto ours);
* layer norm normalises over the channel axis;
* attention is split per head, each head's scores are ``einsum("nchw,nwhu->nchu")`` (the one
  einsum form Core ML keeps as a single op) with the keys on the channel axis, so the softmax
  runs over axis 1; long sequences (>= ``CHUNK_FROM`` tokens) split the queries into chunks of
  at most ``QUERY_CHUNK`` tokens so no score map is sequence x sequence;
* the linear layers outside the transformers (time and SDXL's added embeddings, the ResNets'
  time projections) become 1x1 convolutions too, so the program has no ``linear`` op, and the
  ResNets add their time projection as one (B, C, 1, 1) tensor, so no rank-3 tensor is left.

Why swap modules inside a copy of the diffusers UNet instead of writing a whole UNet: the
ResNets, down/up samplers and skip wiring are already convolutional and rank 4, identical for
SD 1.x/2.x and SDXL, and diffusers keeps them correct across configs (transformer layers per
block, attention head dims, linear or convolutional projections, SDXL's added embeddings).
Only the transformer blocks and the linear layers differ, so only they are ours; the result
loads the diffusers weights through one explicit mapping and is checked against diffusers.

The text conditioning enters in Apple's (B, C, 1, 77) layout and is passed through to the
transformers untouched.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

#: Sequences at least this long have their queries cut into chunks.
CHUNK_FROM = 1024
#: The largest query chunk.
QUERY_CHUNK = 512


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of a (B, C, 1, S) tensor."""

    def __init__(self, channels: int, eps: float, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dim=1, keepdim=True)
        out = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None and self.bias is not None:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def _conv(inputs: int, outputs: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel_size=1, bias=bias)


class Conv1x1Linear(nn.Module):
    """A linear layer on (B, C) vectors computed as a 1x1 convolution (time embeddings)."""

    def __init__(self, inputs: int, outputs: int, bias: bool) -> None:
        super().__init__()
        self.conv = _conv(inputs, outputs, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y: torch.Tensor = self.conv(x.reshape(-1, x.shape[-1], 1, 1))
        return y.reshape(*lead, y.shape[1])


def _attention_scores(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One head: q (B, d, 1, Sq), k_t (B, Sk, 1, d), v (B, d, 1, Sk) -> (B, d, 1, Sq)."""
    weights = torch.einsum("nchw,nwhu->nchu", k_t, q).softmax(dim=1)  # (B, Sk, 1, Sq)
    return torch.einsum("nchw,nwhu->nchu", v, weights)


class ANEAttention(nn.Module):
    """Multi-head attention on (B, C, 1, S) tensors, split per head, queries chunked when long."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int, out_bias: bool) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.to_q = _conv(query_dim, inner, False)
        self.to_k = _conv(context_dim, inner, False)
        self.to_v = _conv(context_dim, inner, False)
        self.to_out = _conv(inner, query_dim, out_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = self.to_q(x) * self.scale
        k_t = self.to_k(context).transpose(1, 3)  # (B, Sk, 1, C): the keys on the channel axis
        v = self.to_v(context)
        d = self.dim_head
        qs, ks, vs = q.split(d, dim=1), k_t.split(d, dim=3), v.split(d, dim=1)
        length = q.shape[3]
        chunk = QUERY_CHUNK if length >= CHUNK_FROM else length
        heads = []
        for qh, kh, vh in zip(qs, ks, vs):
            if chunk < length:
                heads.append(torch.cat([_attention_scores(c, kh, vh) for c in qh.split(chunk, dim=3)], dim=3))
            else:
                heads.append(_attention_scores(qh, kh, vh))
        out: torch.Tensor = self.to_out(torch.cat(heads, dim=1))
        return out


class ANEFeedForward(nn.Module):
    """GEGLU feed-forward as two 1x1 convolutions."""

    def __init__(self, dim: int, inner: int, gelu_approximate: str, out_bias: bool = True) -> None:
        super().__init__()
        self.proj = _conv(dim, inner * 2, True)
        self.out = _conv(inner, dim, out_bias)
        self.approximate = gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=1)
        out: torch.Tensor = self.out(hidden * F.gelu(gate, approximate=self.approximate))
        return out


class ANETransformerBlock(nn.Module):
    """Self-attention, cross-attention and feed-forward, each pre-normed, on (B, C, 1, S)."""

    def __init__(self, block: Any) -> None:
        super().__init__()
        _check_block(block)
        a1, a2 = block.attn1, block.attn2
        dim = a1.to_q.in_features
        self.only_cross = bool(block.only_cross_attention)
        self.norm1 = ChannelLayerNorm(dim, block.norm1.eps, block.norm1.elementwise_affine)
        ctx1 = a1.to_k.in_features
        self.attn1 = ANEAttention(dim, ctx1, a1.heads, a1.to_q.out_features // a1.heads, a1.to_out[0].bias is not None)
        self.attn2: ANEAttention | None = None
        if a2 is not None:
            self.norm2 = ChannelLayerNorm(dim, block.norm2.eps, block.norm2.elementwise_affine)
            self.attn2 = ANEAttention(dim, a2.to_k.in_features, a2.heads, a2.to_q.out_features // a2.heads, a2.to_out[0].bias is not None)
        self.norm3 = ChannelLayerNorm(dim, block.norm3.eps, block.norm3.elementwise_affine)
        geglu = block.ff.net[0]
        self.ff = ANEFeedForward(dim, geglu.proj.out_features // 2, getattr(geglu, "approximate", "none"), block.ff.net[2].bias is not None)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x), context if self.only_cross else None) + x
        if self.attn2 is not None:
            x = self.attn2(self.norm2(x), context) + x
        out: torch.Tensor = self.ff(self.norm3(x)) + x
        return out


def _check_block(block: Any) -> None:
    from diffusers.models.activations import GEGLU

    problems = []
    if getattr(block, "norm_type", "layer_norm") != "layer_norm":
        problems.append(f"norm_type {block.norm_type}")
    if not isinstance(block.ff.net[0], GEGLU):
        problems.append(f"feed-forward activation {type(block.ff.net[0]).__name__}")
    if getattr(block, "pos_embed", None) is not None:
        problems.append("positional embeddings")
    for attn in (block.attn1, block.attn2):
        if attn is not None and (attn.norm_q is not None or attn.norm_cross or attn.residual_connection or attn.rescale_output_factor != 1.0):
            problems.append("an attention variant (qk norm, residual or rescaled output)")
    if problems:
        raise ValueError("this UNet's transformer blocks use " + ", ".join(problems) + ", which the Neural Engine layout does not cover")


class ANETransformer2D(nn.Module):
    """Drop-in for diffusers' continuous-input ``Transformer2DModel`` inside a UNet block."""

    def __init__(self, transformer: Any) -> None:
        super().__init__()
        if not getattr(transformer, "is_input_continuous", False):
            raise ValueError("only continuous-input transformers are supported in the Neural Engine layout")
        norm = transformer.norm
        channels = norm.num_channels
        self.norm = nn.GroupNorm(norm.num_groups, channels, eps=norm.eps, affine=norm.affine)
        self.linear_projection = bool(transformer.use_linear_projection)
        proj_in, proj_out = transformer.proj_in, transformer.proj_out
        inner = proj_in.out_features if self.linear_projection else proj_in.out_channels
        self.proj_in = _conv(channels, inner, proj_in.bias is not None)
        self.transformer_blocks = nn.ModuleList(ANETransformerBlock(b) for b in transformer.transformer_blocks)
        self.proj_out = _conv(inner, channels, proj_out.bias is not None)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor]:
        b, _, h, w = hidden_states.shape
        x = self.proj_in(self.norm(hidden_states))
        x = x.reshape(b, x.shape[1], 1, h * w)  # (B, C, 1, S): channels first, sequence last
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states)
        out = self.proj_out(x.reshape(b, x.shape[1], h, w)) + hidden_states
        return (out,)


def _resnet_forward(self: Any, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args: Any, **kwargs: Any) -> torch.Tensor:
    """diffusers' ResnetBlock2D forward for its plain form (no resampling, additive time
    embedding), with the time projection made (B, C, 1, 1) in one step: diffusers' ``[:, :,
    None, None]`` converts to two ``expand_dims`` and leaves a rank-3 tensor per ResNet."""
    h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
    if self.time_emb_proj is not None and temb is not None:
        t = temb if self.skip_time_act else self.nonlinearity(temb)
        h = h + self.time_emb_proj.conv(t.reshape(t.shape[0], t.shape[1], 1, 1))
    h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
    shortcut = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
    out: torch.Tensor = (shortcut + h) / self.output_scale_factor
    return out


def _swap(module: nn.Module) -> None:
    import types

    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    for name, child in module.named_children():
        if isinstance(child, ResnetBlock2D) and child.upsample is None and child.downsample is None and child.time_embedding_norm == "default":
            child.forward = types.MethodType(_resnet_forward, child)  # type: ignore[method-assign]
            _swap(child)
        elif isinstance(child, Transformer2DModel):
            setattr(module, name, ANETransformer2D(child))
        elif isinstance(child, nn.Linear):
            setattr(module, name, Conv1x1Linear(child.in_features, child.out_features, child.bias is not None))
        else:
            _swap(child)


#: diffusers' names inside a transformer block -> ours (the rest are the same).
_RENAMES = (
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.proj."),
    (".ff.net.2.", ".ff.out."),
)


def ane_state_dict(diffusers_state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a diffusers UNet state dict onto the Neural Engine layout's names and shapes.

    Transformer keys are renamed (``to_out.0`` -> ``to_out``, ``ff.net.0.proj`` -> ``ff.proj``,
    ``ff.net.2`` -> ``ff.out``); linear layers outside the transformers gain ``.conv``; every
    linear weight (O, I) becomes a 1x1 convolution weight (O, I, 1, 1). ``target`` (our
    module's own state dict) gives the expected names and shapes; a key left over on either
    side is an error, so a config we do not map fails loudly rather than loading half.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in diffusers_state.items():
        new = key
        for old, repl in _RENAMES:
            new = new.replace(old, repl)
        if new not in target:
            stem, _, leaf = new.rpartition(".")
            new = f"{stem}.conv.{leaf}"
        if new not in target:
            raise KeyError(f"no place for diffusers weight {key!r} in the Neural Engine layout")
        want = target[new].shape
        mapped[new] = value.reshape(want) if value.dim() == 2 and len(want) == 4 else value
        if mapped[new].shape != want:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(want)}")
    missing = set(target) - set(mapped)
    if missing:
        raise KeyError(f"the diffusers UNet has no weights for {sorted(missing)[:3]}")
    return mapped


def ane_unet(unet: nn.Module) -> nn.Module:
    """A copy of the diffusers ``unet`` in the Neural Engine layout, with its weights.

    The copy takes ``encoder_hidden_states`` as (B, C, 1, 77) and is otherwise called like the
    diffusers UNet (SDXL's ``added_cond_kwargs`` included).
    """
    ours = copy.deepcopy(unet)
    _swap(ours)
    ours.load_state_dict(ane_state_dict(unet.state_dict(), ours.state_dict()), strict=True)
    return ours.eval()
