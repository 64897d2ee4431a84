"""Conditioning as values: what the prompt, the input image and features hand the UNet.

The loop never knows which model family it drives: a family's components put what their
UNet needs into these values (SDXL: pooled embeddings and time ids in ``extras``) and read
them back in ``Components.unet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TextCond:
    """One encoded prompt: ``hidden`` (B, S, D), optional ``pooled`` (B, P) and extra inputs.

    Every tensor in ``extras`` has the batch on its first axis, so guidance can batch the
    whole value the same way it batches ``hidden``.
    """

    hidden: "torch.Tensor"
    pooled: "torch.Tensor | None" = None
    extras: "dict[str, torch.Tensor]" = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(self.hidden.shape[0])

    def map(self, fn: "Callable[[torch.Tensor], torch.Tensor]") -> "TextCond":
        """The same conditioning with ``fn`` applied to every tensor (expand, move, cast)."""
        return TextCond(
            fn(self.hidden),
            None if self.pooled is None else fn(self.pooled),
            {k: fn(v) for k, v in self.extras.items()},
        )

    def repeat(self, n: int) -> "TextCond":
        """Batch of ``n`` copies of a single prompt's conditioning."""
        return self.map(lambda t: t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(parts: "list[TextCond]") -> "TextCond":
        import torch

        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts if p.pooled is not None])
        extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
        return TextCond(torch.cat([p.hidden for p in parts]), pooled, extras)


#: One prompt's text conditioning over the steps: ``(last step, cond)`` pairs, ascending.
CondSchedule = tuple[tuple[int, TextCond], ...]


@dataclass(frozen=True)
class PromptSchedule:
    """Text conditioning that changes during sampling (AUTOMATIC1111's prompt editing,
    alternation and ``AND``; see :mod:`heyim_desktop.core.prompt_schedule`).

    Step ``s`` (0 for the job's first UNet call) uses, in each schedule, the first entry whose
    last step is at least ``s``. ``parts`` are the ``AND`` parts with their ``weights``.
    """

    parts: tuple[CondSchedule, ...]
    weights: tuple[float, ...]
    #: The negative prompt's schedule; None without classifier-free guidance.
    negative: CondSchedule | None
    #: The empty prompt's conditioning: its chunk evens out chunk counts.
    empty: TextCond

    @staticmethod
    def _index(schedule: CondSchedule, step: int) -> int:
        for i, (end, _) in enumerate(schedule):
            if step <= end:
                return i
        return 0

    def key_at(self, step: int) -> tuple[int, ...]:
        """Which entry each schedule uses at ``step`` (the conditioning changes when this does)."""
        keys = [self._index(p, step) for p in self.parts]
        if self.negative is not None:
            keys.append(self._index(self.negative, step))
        return tuple(keys)

    def at(self, step: int) -> "tuple[list[TextCond], TextCond | None]":
        """The parts' conditioning and the negative's at ``step``, all of one token length.

        ``AND`` parts of different lengths are evened out by repeating their last token
        vector, and parts against the negative with the empty prompt's chunk, as
        AUTOMATIC1111 does (its ``stack_conds`` and ``pad_cond_uncond``).
        """
        import torch

        conds = [p[self._index(p, step)][1] for p in self.parts]
        uncond = None if self.negative is None else self.negative[self._index(self.negative, step)][1]
        longest = max(c.hidden.shape[1] for c in conds)
        conds = [
            c if c.hidden.shape[1] == longest else replace(
                c, hidden=torch.cat([c.hidden, c.hidden[:, -1:].repeat(1, longest - c.hidden.shape[1], 1)], dim=1)
            )
            for c in conds
        ]
        if uncond is not None and uncond.hidden.shape[1] != longest:
            window = self.empty.hidden.shape[1]

            def pad(c: TextCond, to: int) -> TextCond:
                if c.hidden.shape[1] >= to:
                    return c
                extra = self.empty.hidden.to(c.hidden.dtype).expand(c.hidden.shape[0], -1, -1)
                extra = extra.repeat(1, (to - c.hidden.shape[1]) // window, 1)
                return replace(c, hidden=torch.cat([c.hidden, extra], dim=1))

            target = max(longest, uncond.hidden.shape[1])
            conds, uncond = [pad(c, target) for c in conds], pad(uncond, target)
        return conds, uncond


@dataclass(frozen=True)
class PromptEncoding:
    """The encoded prompt and negative prompt of one request, and what encoding reported."""

    cond: TextCond
    #: None when the job runs without classifier-free guidance.
    uncond: TextCond | None
    warnings: tuple[str, ...] = ()
    truncated_prompt: str | None = None
    truncated_negative: str | None = None
    #: Set when the conditioning changes by step or the prompt has ``AND`` parts (``cond``
    #: and ``uncond`` are then the first step's); None for an ordinary prompt.
    schedule: PromptSchedule | None = None


@dataclass(frozen=True)
class TokenCount:
    """What the token counter shows: tokens used, the model's limit, and chunk boundaries."""

    #: Prompt tokens without start/end tokens; where the model chunks, AUTOMATIC1111's
    #: count (every chunk but the last counts a full 75).
    tokens: int
    #: Where it chunks: the chunks used x 75 (``83/150``); else the window's 75.
    limit: int
    chunks: int = 1
    #: Prompt-token positions where chunks 2, 3, ... start (empty when not chunked).
    boundaries: tuple[int, ...] = ()
    #: Tokens beyond this count are cut (None when nothing is cut).
    cut_at: int | None = None
    #: Counted by the model's own tokenizer (False: an estimate).
    exact: bool = True
    #: Prompt tokens in each chunk, and the first words of chunks 2, 3, ...
    chunk_tokens: tuple[int, ...] = ()
    chunk_starts: tuple[str, ...] = ()
    #: The text that is cut, decoded, when something is.
    cut_text: str | None = None
    #: The model's token window (77 for CLIP), for showing ``N/77``.
    window: int = 77


@dataclass
class UNetCall:
    """One UNet evaluation. Extensions may add to it in ``before_unet``.

    ``sample`` is already batched for guidance and scaled by the scheduler. ``concat`` is
    stacked onto ``sample``'s channels (inpainting UNets); the down/mid residuals are
    ControlNet's, the intrablock ones T2I-Adapter features (added inside the down blocks).
    """

    sample: "torch.Tensor"
    timestep: "torch.Tensor"
    text: TextCond
    timestep_cond: "torch.Tensor | None" = None
    concat: "torch.Tensor | None" = None
    down_residuals: "list[torch.Tensor] | None" = None
    mid_residual: "torch.Tensor | None" = None
    intrablock_residuals: "list[torch.Tensor] | None" = None

    def with_text(self, text: TextCond) -> "UNetCall":
        return replace(self, text=text)


@dataclass(frozen=True)
class ImageCond:
    """Image-side conditioning of one job: the input image's VAE moments and, later, a mask.

    ``moments`` are the encoder's (1, 2C, h, w) mean and log-variance; ``mask`` (1, 1, h, w)
    in [0, 1] (1 = repaint) and ``masked_moments`` belong to inpainting.
    """

    moments: "torch.Tensor | None" = None
    mask: "torch.Tensor | None" = None
    masked_moments: "torch.Tensor | None" = None


if TYPE_CHECKING:
    from typing import Callable
