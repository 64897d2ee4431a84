"""Prompt text -> text conditioning for CLIP-encoded models, shared by every engine.

AUTOMATIC1111's prompt syntax, so a prompt copied from another tool means the same here:

* ``(word)`` multiplies the attention on ``word`` by 1.1, ``((word))`` by 1.21, ``[word]``
  divides it by 1.1, ``(word:1.3)`` sets a factor; ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are
  the literal characters; an unclosed bracket runs to the end of the prompt.
* ``BREAK`` ends the current chunk: what follows starts a new 75-token chunk.
* A prompt longer than 75 tokens is read in chunks of 75 (each with its own start and end
  token, 77 in all). A chunk that fills up while a comma lies at most 20 tokens back moves
  the text after that comma to the next chunk, as AUTOMATIC1111 does by default.
* Weights act on the encoder's output: each token's vector is multiplied by its weight and
  the chunk's mean is then restored (AUTOMATIC1111's "Original" emphasis).
* Chunks are joined along the token axis; the pooled output (SDXL) is the first chunk's.
  A prompt and a negative prompt of different chunk counts are evened out with chunks of
  the empty prompt, as AUTOMATIC1111 pads them.

An engine describes each of its text encoders as a :class:`ClipEncoder` (its tokenizer and
an ``encode(input_ids, attention_mask) -> (hidden, pooled)`` function); this module owns
tokenizing, chunking, weighting, what is cut and the warning that says so, and joins several
encoders' hidden states along the channel axis (SDXL: CLIP ViT-L 768 + OpenCLIP bigG 1280).
An engine whose text encoder has a fixed window (Core ML) passes ``max_chunks=1``: weights
still apply, and a longer prompt is cut.

Nothing here needs a model beyond its tokenizer until :func:`encode_text`, so the counting
(:class:`PromptCounter`) runs wherever the tokenizer is, the engine's process included.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from heyim_desktop.core.conditioning import PromptEncoding, TextCond, TokenCount

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

#: ``encode(input_ids (1, 77), attention_mask (1, 77)) -> (hidden (1, 77, D), pooled (1, P) or None)``.
EncodeFn = Callable[["torch.Tensor", "torch.Tensor"], "tuple[torch.Tensor, torch.Tensor | None]"]

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
#: How far back (in tokens) a full chunk looks for a comma to break at (A1111's default).
COMMA_BACKTRACK = 20
#: The marker a parsed ``BREAK`` leaves in the piece list (A1111 uses the same weight).
BREAK_WEIGHT = -1.0


@dataclass(frozen=True)
class ClipEncoder:
    tokenizer: Any
    encode: EncodeFn


class PromptSyntaxError(ValueError):
    """A ``(text:weight)`` whose weight is not a number."""


# -- parsing -------------------------------------------------------------------------------

# One alternative per kind of piece, tried in order: escapes, brackets, a ``:weight)``
# closing, a run of plain text, and a colon that is just text.
_PIECE = re.compile(
    r"""
    \\[()\[\]\\]        # an escaped bracket or backslash
  | \\                  # a lone backslash (dropped)
  | [(\[]               # an opening bracket
  | :([+-]?[.\d]+)\)    # a weight closing a round bracket
  | [)\]]               # a closing bracket
  | [^\\()\[\]:]+       # plain text
  | :                   # a colon that closes nothing
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """``text`` as (piece, weight) pairs, AUTOMATIC1111's ``parse_prompt_attention`` rules.

    A ``BREAK`` keyword becomes the pair ``("BREAK", -1.0)``. Neighbouring pieces of equal
    weight are merged, so a prompt without syntax comes back as one piece of weight 1.0.
    """
    pieces: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _PIECE.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token in ("(", "["):
            (round_open if token == "(" else square_open).append(len(pieces))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise PromptSyntaxError(f"{token!r} does not give a number as the weight") from None
            scale_from(round_open.pop(), factor)
        elif token == ")" and round_open:
            scale_from(round_open.pop(), ROUND_FACTOR)
        elif token == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_FACTOR)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    pieces.append(["BREAK", BREAK_WEIGHT])
                pieces.append([part, 1.0])
    # Unclosed brackets apply to the end of the prompt.
    for start in round_open:
        scale_from(start, ROUND_FACTOR)
    for start in square_open:
        scale_from(start, SQUARE_FACTOR)
    if not pieces:
        return [("", 1.0)]
    merged: list[list[Any]] = [pieces[0]]
    for piece in pieces[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(str(t), float(w)) for t, w in merged]


# -- chunking ------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Up to 75 prompt tokens (no start/end tokens) and their weights."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass
class ChunkedPrompt:
    chunks: list[Chunk]
    #: AUTOMATIC1111's count: 75 for every chunk but the last, plus the last one's tokens.
    token_count: int
    #: Token ids beyond the model's limit, left out.
    dropped: list[int] = field(default_factory=list)
    #: A ``BREAK`` was ignored because the model reads a single window.
    break_ignored: bool = False


@dataclass(frozen=True)
class _Special:
    bos: int
    eos: int
    pad: int
    comma: int | None
    window: int

    @property
    def chunk_length(self) -> int:
        return self.window - 2


def _special_ids(tokenizer: Any) -> _Special:
    eos = int(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    return _Special(
        bos=int(tokenizer.bos_token_id), eos=eos, pad=eos if pad is None else int(pad),
        comma=None if comma is None or comma == tokenizer.unk_token_id else int(comma),
        window=int(tokenizer.model_max_length),
    )


def chunk_prompt(tokenizer: Any, text: str, *, max_chunks: int = 1) -> ChunkedPrompt:
    """The prompt's tokens laid into chunks the way AUTOMATIC1111's ``tokenize_line`` does.

    At most ``max_chunks`` chunks are kept. The last chunk allowed does not move text after
    a comma onward (there is no next chunk to move it to): it fills up, and the rest is
    ``dropped``. With ``max_chunks=1`` a ``BREAK`` is read as a space.
    """
    special = _special_ids(tokenizer)
    size = special.chunk_length
    parsed = parse_prompt_attention(text)
    break_ignored = False
    if max_chunks <= 1 and any(w == BREAK_WEIGHT and t == "BREAK" for t, w in parsed):
        break_ignored = True
        parsed = _join_breaks(parsed)
    texts = [t for t, _ in parsed]
    token_lists = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"] if texts else []

    chunks: list[Chunk] = []
    dropped: list[int] = []
    current = Chunk()
    last_comma = -1
    count = 0

    def full() -> bool:
        return len(chunks) >= max_chunks

    def close(last: bool = False) -> None:
        nonlocal current, last_comma, count
        count += len(current.tokens) if last else size
        chunks.append(current)
        current = Chunk()
        last_comma = -1

    for (piece, weight), ids in zip(parsed, token_lists):
        if piece == "BREAK" and weight == BREAK_WEIGHT:
            if full():
                continue
            close()
            continue
        for token in ids:
            if full():
                dropped.append(token)
                continue
            at_last_chunk = len(chunks) == max_chunks - 1
            if token == special.comma:
                last_comma = len(current.tokens)
            elif (
                not at_last_chunk and len(current.tokens) == size and last_comma != -1
                and len(current.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved = Chunk(current.tokens[cut:], current.weights[cut:])
                del current.tokens[cut:], current.weights[cut:]
                close()
                current = moved
            if len(current.tokens) == size:
                close()
                if full():
                    dropped.append(token)
                    continue
            current.tokens.append(token)
            current.weights.append(weight)
    if (current.tokens or not chunks) and not full():
        close(last=True)
    return ChunkedPrompt(chunks, count, dropped, break_ignored)


def _join_breaks(parsed: list[tuple[str, float]]) -> list[tuple[str, float]]:
    out: list[list[Any]] = []
    for piece, weight in parsed:
        if piece == "BREAK" and weight == BREAK_WEIGHT:
            piece, weight = " ", 1.0
        if out and out[-1][1] == weight:
            out[-1][0] += piece
        else:
            out.append([piece, weight])
    return [(str(t), float(w)) for t, w in out]


def chunk_ids(tokenizer: Any, chunk: Chunk) -> tuple[list[int], list[int], list[float]]:
    """A chunk as the encoder reads it: ids, attention mask and weights, 77 long.

    Start token, the tokens, the end token, then padding: the end token again where the
    tokenizer pads with it (CLIP ViT-L), else its own pad token (OpenCLIP: ``!``).
    """
    special = _special_ids(tokenizer)
    n = len(chunk.tokens)
    rest = special.window - n - 2
    ids = [special.bos, *chunk.tokens, special.eos] + [special.pad] * rest
    mask = [1] * (n + 2) + [0] * rest
    weights = [1.0, *chunk.weights, 1.0] + [1.0] * rest
    return ids, mask, weights


# -- encoding ------------------------------------------------------------------------------


def apply_weights(hidden: "torch.Tensor", weights: Sequence[float]) -> "torch.Tensor":
    """AUTOMATIC1111's emphasis on one chunk: scale each token, then restore the mean.

    The multipliers are float32 as in A1111 (they promote a half-precision output); the
    result returns in ``hidden``'s dtype. All-1.0 weights
    leave ``hidden`` untouched, so ``(word:1.0)`` is exactly ``word``.
    """
    import torch

    if all(w == 1.0 for w in weights):
        return hidden
    mean_before = hidden.mean()
    z = hidden * torch.tensor(list(weights), dtype=torch.float32, device=hidden.device).reshape(1, -1, 1)
    mean_after = z.mean()
    # A zero mean (no real encoder gives one) would turn the chunk into NaN in A1111; keep
    # the weighted values instead.
    if bool(mean_after != 0):
        z = z * (mean_before / mean_after)
    return z.to(hidden.dtype)


@dataclass(frozen=True)
class EncodedText:
    cond: TextCond
    #: The text cut beyond the model's limit, decoded, or None.
    dropped: str | None
    chunks: int
    break_ignored: bool = False


def _encode_chunks(
    enc: ClipEncoder, chunks: Sequence[Chunk], device: "torch.device"
) -> tuple[list["torch.Tensor"], "torch.Tensor | None"]:
    import torch

    hiddens = []
    pooled = None
    for i, chunk in enumerate(chunks):
        ids, mask, weights = chunk_ids(enc.tokenizer, chunk)
        hidden, pool = enc.encode(
            torch.tensor([ids], dtype=torch.long, device=device), torch.tensor([mask], dtype=torch.long, device=device)
        )
        hiddens.append(apply_weights(hidden, weights))
        if i == 0:
            pooled = pool
    return hiddens, pooled


def encode_prompt(
    encoders: Sequence[ClipEncoder], text: str, device: "torch.device", *, max_chunks: int = 1
) -> EncodedText:
    """``text`` through every encoder, chunk by chunk, with AUTOMATIC1111's weights.

    Each encoder chunks with its own tokenizer and weights its own output; the chunks'
    hidden states join along the tokens, the encoders' along the channels. The pooled
    output is the last encoder's that gives one, from the first chunk.
    """
    import torch

    per_encoder: list[list[torch.Tensor]] = []
    pooled = None
    dropped: str | None = None
    break_ignored = False
    for enc in encoders:
        chunked = chunk_prompt(enc.tokenizer, text, max_chunks=max_chunks)
        hiddens, pool = _encode_chunks(enc, chunked.chunks, device)
        per_encoder.append(hiddens)
        pooled = pool if pool is not None else pooled
        if chunked.dropped and dropped is None:
            dropped = enc.tokenizer.decode(chunked.dropped)
        break_ignored = break_ignored or chunked.break_ignored
    n = max(len(h) for h in per_encoder)
    if any(len(h) != n for h in per_encoder):
        # Encoders with different vocabularies could chunk differently; even them out.
        for enc, hiddens in zip(encoders, per_encoder):
            if len(hiddens) < n:
                empty, _ = _encode_chunks(enc, [Chunk()], device)
                hiddens.extend(empty * (n - len(hiddens)))
    joined = [torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0] for parts in zip(*per_encoder)]
    hidden = torch.cat(joined, dim=1) if len(joined) > 1 else joined[0]
    return EncodedText(TextCond(hidden, pooled), dropped, n, break_ignored)


def encode_text(
    encoders: Sequence[ClipEncoder], text: str, device: "torch.device", *, max_chunks: int = 1
) -> tuple[TextCond, str | None]:
    """``text`` through every encoder (see :func:`encode_prompt`) and the text cut off, if any."""
    encoded = encode_prompt(encoders, text, device, max_chunks=max_chunks)
    return encoded.cond, encoded.dropped


def pad_to_chunks(cond: TextCond, empty: TextCond, chunks: int) -> TextCond:
    """``cond`` with copies of the empty prompt's chunk appended up to ``chunks`` chunks."""
    import torch

    window = empty.hidden.shape[1]
    have = cond.hidden.shape[1] // window
    if have >= chunks:
        return cond
    pad = empty.hidden.expand(cond.hidden.shape[0], -1, -1).repeat(1, chunks - have, 1)
    return TextCond(torch.cat([cond.hidden, pad.to(cond.hidden.dtype)], dim=1), cond.pooled, cond.extras)


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
    max_chunks: int = 1,
) -> PromptEncoding:
    """The prompt (and, for guidance, the negative prompt) of ``request`` as text conditioning.

    ``max_chunks`` is the model's ``Capabilities.max_prompt_chunks``. When the two come out
    in different numbers of chunks, the shorter is padded with the empty prompt's chunk.
    """
    from heyim_desktop.core.errors import InvalidRequest

    def encode(field_name: str, text: str) -> EncodedText:
        try:
            return encode_prompt(encoders, text, device, max_chunks=max_chunks)
        except PromptSyntaxError as exc:
            raise InvalidRequest(field_name, str(exc)) from None

    pos = encode("prompt", request.prompt)
    neg = encode("negative_prompt", request.negative_prompt) if with_negative else None
    cond = pos.cond
    uncond = None if neg is None else neg.cond
    if uncond is not None and neg is not None and pos.chunks != neg.chunks:
        empty = encode_prompt(encoders, "", device, max_chunks=1).cond
        n = max(pos.chunks, neg.chunks)
        cond, uncond = pad_to_chunks(cond, empty, n), pad_to_chunks(uncond, empty, n)
    warnings = []
    window = int(encoders[0].tokenizer.model_max_length)
    limit = window if max_chunks <= 1 else max_chunks * (window - 2)
    for label, enc in (("prompt", pos), ("negative prompt", neg)):
        if enc is not None and enc.dropped:
            warnings.append(truncation_warning(label, limit, enc.dropped))
        if enc is not None and enc.break_ignored:
            msg = f"BREAK in the {label} was read as a space: this model reads one {window}-token window."
            log.warning(msg)
            warnings.append(msg)
    return PromptEncoding(
        cond.map(lambda t: t.to(dtype)),
        None if uncond is None else uncond.map(lambda t: t.to(dtype)),
        tuple(warnings),
        pos.dropped,
        None if neg is None else neg.dropped,
    )


# -- counting ------------------------------------------------------------------------------


def count_tokens(tokenizer: Any, text: str, *, max_chunks: int = 1) -> TokenCount:
    """What the token counter shows for ``text``, laid out as it will be encoded.

    Where the model chunks (``max_chunks > 1``) the count is AUTOMATIC1111's (``83/150``:
    every chunk but the last counts 75) and ``boundaries`` are the prompt-token positions
    where chunks 2, 3, ... start. Where it does not, ``limit`` is the window's 75 tokens and
    ``cut_at`` marks the cut. A prompt with broken weight syntax is counted as plain text.
    """
    window = int(tokenizer.model_max_length)
    size = window - 2
    if not text.strip():
        return TokenCount(0, size, window=window)
    try:
        chunked = chunk_prompt(tokenizer, text, max_chunks=max_chunks)
    except PromptSyntaxError:
        chunked = chunk_prompt(tokenizer, text.replace(":", " "), max_chunks=max_chunks)
    sizes = tuple(len(c.tokens) for c in chunked.chunks)
    cut_text = tokenizer.decode(chunked.dropped) if chunked.dropped else None
    starts = tuple(tokenizer.decode(c.tokens[:4]) for c in chunked.chunks[1:])
    if max_chunks <= 1:
        used = sizes[0] if sizes else 0
        total = used + len(chunked.dropped)
        return TokenCount(
            total, size, 1, (), size if chunked.dropped else None,
            chunk_tokens=sizes, chunk_starts=(), cut_text=cut_text, window=window,
        )
    boundaries = []
    seen = 0
    for n in sizes[:-1]:
        seen += n
        boundaries.append(seen)
    tokens = chunked.token_count + len(chunked.dropped)
    limit = max(1, -(-max(chunked.token_count, 1) // size)) * size
    cut_at = max_chunks * size if chunked.dropped else None
    return TokenCount(
        tokens, limit, len(chunked.chunks), tuple(boundaries), cut_at,
        chunk_tokens=sizes, chunk_starts=starts, cut_text=cut_text, window=window,
    )


class PromptCounter:
    """``count_tokens`` on a private copy of a tokenizer, safe to call from any thread.

    An engine makes one when it loads; the window's counter calls it on every keystroke
    while the engine may be encoding a prompt on another thread.
    """

    def __init__(self, tokenizer: Any, *, max_chunks: int = 1) -> None:
        try:
            self._tokenizer = copy.deepcopy(tokenizer)
        except Exception:  # noqa: BLE001 - a tokenizer that cannot be copied is shared, under the lock
            log.info("cannot copy the tokenizer for the token counter; sharing it", exc_info=True)
            self._tokenizer = tokenizer
        self.max_chunks = max_chunks
        self._lock = threading.Lock()

    def __call__(self, text: str) -> TokenCount:
        with self._lock:
            return count_tokens(self._tokenizer, text, max_chunks=self.max_chunks)
