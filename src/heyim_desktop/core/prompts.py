"""Prompt text -> text conditioning for CLIP-encoded models, shared by every engine.

An engine describes each of its text encoders as a :class:`ClipEncoder` (its tokenizer and
an ``encode(input_ids, attention_mask) -> (hidden, pooled)`` function); this module owns
tokenizing, what is cut and the warning that says so, and joins several encoders' hidden
states along the channel axis (SDXL: CLIP ViT-L 768 + OpenCLIP bigG 1280 = 2048).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from heyim_desktop.core.conditioning import PromptEncoding, TextCond, TokenCount

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

#: ``encode(input_ids (1, 77), attention_mask (1, 77)) -> (hidden (1, 77, D), pooled (1, P) or None)``.
EncodeFn = Callable[["torch.Tensor", "torch.Tensor"], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass(frozen=True)
class ClipEncoder:
    tokenizer: Any
    encode: EncodeFn


def tokenize(tokenizer: Any, text: str) -> tuple["torch.Tensor", "torch.Tensor", str | None]:
    """Token ids and mask padded to the tokenizer's window, and the text cut off beyond it."""
    import torch

    max_len = tokenizer.model_max_length
    enc = tokenizer(text, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    dropped: str | None = None
    full = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > max_len and not torch.equal(enc.input_ids, full[:, :max_len]):
        dropped = tokenizer.batch_decode(full[:, max_len - 1 : -1])[0]
    return enc.input_ids, enc.attention_mask, dropped


def encode_text(encoders: Sequence[ClipEncoder], text: str, device: "torch.device") -> tuple[TextCond, str | None]:
    """``text`` through every encoder: hidden states joined on channels, the last encoder's pooled output."""
    import torch

    hiddens: list[torch.Tensor] = []
    pooled = None
    dropped: str | None = None
    for enc in encoders:
        ids, mask, cut = tokenize(enc.tokenizer, text)
        hidden, pool = enc.encode(ids.to(device), mask.to(device))
        hiddens.append(hidden)
        pooled = pool if pool is not None else pooled
        dropped = dropped or cut
    hidden = hiddens[0] if len(hiddens) == 1 else torch.cat(hiddens, dim=-1)
    return TextCond(hidden, pooled), dropped


def truncation_warning(label: str, limit: int, dropped: str) -> str:
    msg = f"The {label} is longer than {limit} tokens; this part was ignored: {dropped!r}"
    log.warning(msg)
    return msg


def encode_prompt_pair(
    request: "GenerationRequest",
    *,
    encoders: Sequence[ClipEncoder],
    with_negative: bool,
    device: "torch.device",
    dtype: "torch.dtype",
) -> PromptEncoding:
    """The prompt (and, for guidance, the negative prompt) of ``request`` as text conditioning."""
    cond, dropped = encode_text(encoders, request.prompt, device)
    uncond = None
    dropped_neg = None
    if with_negative:
        uncond, dropped_neg = encode_text(encoders, request.negative_prompt, device)
        uncond = uncond.map(lambda t: t.to(dtype))
    warnings = []
    limit = encoders[0].tokenizer.model_max_length
    for label, text in (("prompt", dropped), ("negative prompt", dropped_neg)):
        if text:
            warnings.append(truncation_warning(label, limit, text))
    return PromptEncoding(cond.map(lambda t: t.to(dtype)), uncond, tuple(warnings), dropped, dropped_neg)


def count_tokens(tokenizer: Any, text: str) -> TokenCount:
    """Tokens of ``text`` (without the start and end tokens) against a single window."""
    limit = int(tokenizer.model_max_length)
    if not text:
        return TokenCount(0, limit - 2)
    n = len(tokenizer(text, truncation=False)["input_ids"]) - 2
    return TokenCount(n, limit - 2, cut_at=(limit - 2) if n > limit - 2 else None)
