"""Guidance strategies: how the loop batches a UNet call and combines its prediction.

``ClassifierFree`` runs the negative and the positive prompt in one batch and moves the
prediction away from the negative; ``Embedded`` (LCM-distilled UNets) hands the guidance
scale to the UNet as an embedding; ``NoGuidance`` runs the prompt alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from heyim_desktop.core.conditioning import TextCond

if TYPE_CHECKING:
    import torch


class Guidance(Protocol):
    #: The text conditioning batched to match :meth:`batch`.
    text: TextCond
    timestep_cond: "torch.Tensor | None"

    def batch(self, latents: "torch.Tensor") -> "torch.Tensor": ...

    def combine(self, prediction: "torch.Tensor") -> "torch.Tensor": ...


@dataclass
class NoGuidance:
    text: TextCond
    timestep_cond: "torch.Tensor | None" = None

    def batch(self, latents: "torch.Tensor") -> "torch.Tensor":
        return latents

    def combine(self, prediction: "torch.Tensor") -> "torch.Tensor":
        return prediction


@dataclass
class ClassifierFree:
    text: TextCond
    scale: float
    timestep_cond: "torch.Tensor | None" = None

    def batch(self, latents: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.cat([latents] * 2)

    def combine(self, prediction: "torch.Tensor") -> "torch.Tensor":
        uncond, cond = prediction.chunk(2)
        return uncond + self.scale * (cond - uncond)


def guidance_embedding(w: float, dim: int, dtype: "torch.dtype") -> "torch.Tensor":
    """Sinusoidal embedding of the guidance scale for guidance-distilled (LCM) UNets."""
    import torch

    wt = torch.tensor([w * 1000.0])
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000.0) / (half - 1)))
    emb = wt.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def build_guidance(
    kind: str,
    *,
    scale: float,
    cond: TextCond,
    uncond: TextCond | None,
    n: int,
    embedding_dim: int | None = None,
    device: "torch.device | None" = None,
    dtype: "torch.dtype | None" = None,
) -> Guidance:
    """The strategy for ``n`` images of one prompt; ``uncond`` is None when CFG is off."""
    import torch

    text = cond.repeat(n)
    if kind == "embedded" and embedding_dim is not None:
        emb = guidance_embedding(scale - 1.0, embedding_dim, torch.float32).to(device=device, dtype=dtype)
        return NoGuidance(text, emb.expand(n, -1))
    if kind == "cfg" and uncond is not None:
        return ClassifierFree(TextCond.cat([uncond.repeat(n), text]), scale)
    return NoGuidance(text)
