"""Guidance strategies: how the loop batches a UNet call and combines its prediction.

``ClassifierFree`` runs the negative and the positive prompt in one batch and moves the
prediction away from the negative; ``Composable`` does so for several prompts at once
(AUTOMATIC1111's ``AND``); ``Embedded`` (LCM-distilled UNets) hands the guidance
scale to the UNet as an embedding; ``NoGuidance`` runs the prompt alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

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


@dataclass
class Composable:
    """Composable diffusion (AUTOMATIC1111's ``AND``): the negative, then each part, in one batch.

    The prediction is ``uncond + sum_i (cond_i - uncond) * (weight_i * scale)``, summed in
    the parts' order as AUTOMATIC1111's ``combine_denoised`` does.
    """

    text: TextCond
    scale: float
    weights: tuple[float, ...]
    timestep_cond: "torch.Tensor | None" = None

    def batch(self, latents: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.cat([latents] * (len(self.weights) + 1))

    def combine(self, prediction: "torch.Tensor") -> "torch.Tensor":
        uncond, *conds = prediction.chunk(len(self.weights) + 1)
        out = uncond.clone()
        for weight, cond in zip(self.weights, conds):
            out += (cond - uncond) * (weight * self.scale)
        return out


def batch_text(guidance: Guidance, conds: "Sequence[TextCond]", uncond: TextCond | None, n: int) -> TextCond:
    """The text conditioning ``guidance`` batches for ``n`` images of these prompts (one step
    of a scheduled prompt): the same layout as the guidance was built with."""
    if isinstance(guidance, Composable):
        if uncond is None:
            raise ValueError("composable guidance needs the negative prompt's conditioning")
        return TextCond.cat([uncond.repeat(n), *(c.repeat(n) for c in conds)])
    if isinstance(guidance, ClassifierFree):
        if uncond is None:
            raise ValueError("classifier-free guidance needs the negative prompt's conditioning")
        return TextCond.cat([uncond.repeat(n), conds[0].repeat(n)])
    return conds[0].repeat(n)


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
    weights: "Sequence[float] | None" = None,
) -> Guidance:
    """The strategy for ``n`` images of one prompt; ``uncond`` is None when CFG is off.

    ``weights`` (one per ``AND`` part of a scheduled prompt) make it :class:`Composable`; its
    text is then ``cond`` for every part until the schedule hands the step's conditioning
    in (:class:`~heyim_desktop.core.prompt_schedule.ScheduleExtension`).
    """
    import torch

    text = cond.repeat(n)
    if weights is not None and kind == "cfg" and uncond is not None:
        return Composable(TextCond.cat([uncond.repeat(n), *[text] * len(weights)]), scale, tuple(weights))
    if kind == "embedded" and embedding_dim is not None:
        emb = guidance_embedding(scale - 1.0, embedding_dim, torch.float32).to(device=device, dtype=dtype)
        return NoGuidance(text, emb.expand(n, -1))
    if kind == "cfg" and uncond is not None:
        return ClassifierFree(TextCond.cat([uncond.repeat(n), text]), scale)
    return NoGuidance(text)
