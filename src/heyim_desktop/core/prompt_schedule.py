"""AUTOMATIC1111's prompt editing, alternation and ``AND``: conditioning that changes by step.

* ``[from:to:when]`` reads ``from`` up to step ``when`` and ``to`` after it; ``[to:when]``
  starts with nothing, ``[from::when]`` ends with nothing. ``when`` with a decimal point is
  a fraction of the steps (``0.25``), without one a step number (``10``); it is capped at
  the step count, and a value below 1 switches before the first step.
* ``[a|b|c]`` alternates every step (``a``, ``b``, ``c``, ``a``, ...); an empty choice is
  nothing.
* ``A AND B :1.5`` is composable diffusion: every part is its own prompt, and the guided
  prediction is ``uncond + sum_i w_i * scale * (cond_i - uncond)``. A part's weight is a
  ``:number`` at its end (1 when absent), also for a prompt without ``AND``.

The rules are AUTOMATIC1111's (``modules/prompt_parser.py`` and its CFG denoiser): the
schedule is a list of ``(last step, text)`` over the request's steps, and the job's step
``s`` (0 for the first UNet call) uses the first entry whose last step is at least ``s``.
A prompt the grammar does not accept (a stray ``|``, a trailing backslash) is read
literally, without any schedule, as AUTOMATIC1111 does. Weights, ``BREAK`` and chunks then
apply to each scheduled text as to any prompt (:mod:`heyim_desktop.core.prompts`).

A request without any of this syntax takes exactly the engine's ordinary
``encode_prompts`` path (:func:`encode_request`); the rest is encoded text by text and
handed to the loop as a :class:`~heyim_desktop.core.conditioning.PromptSchedule`, which
:class:`ScheduleExtension` turns into each step's UNet text conditioning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

from heyim_desktop.core.conditioning import PromptEncoding, PromptSchedule, TextCond
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.extensions import BaseExtension

if TYPE_CHECKING:
    from heyim_desktop.core.components import Components
    from heyim_desktop.core.conditioning import UNetCall
    from heyim_desktop.core.extensions import LoopState
    from heyim_desktop.core.request import GenerationRequest

# -- parsing a prompt into its schedule -----------------------------------------------------

#: A number as the grammar's SIGNED_NUMBER reads it (``3``, ``.5``, ``0.25``, ``1e1``, ``-1``).
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_WHEN_CLOSE = re.compile(rf"\s*({_NUMBER})\s*\]")
_WHEN_ONLY = re.compile(rf"\s*({_NUMBER})\s*")
_SPECIAL = "()[]:|\\"


@dataclass
class _Edit:
    """``[before:after:when]``; ``before`` is None in the ``[after:when]`` form."""

    before: "list[_Node] | None"
    after: "list[_Node]"
    when: str


@dataclass
class _Alternate:
    options: "list[list[_Node]]"


_Node = Union[str, _Edit, _Alternate]


class _NoParse(Exception):
    """The prompt does not fit the grammar: it is read literally."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text

    def top(self) -> list[_Node]:
        """The whole prompt: structures where they close, stray ``( ) [ ] :`` as text."""
        text, pos = self.text, 0
        out: list[_Node] = []
        while pos < len(text):
            ch = text[pos]
            if ch in "([":
                try:
                    nodes, pos = self.structure(pos)
                    out.extend(nodes)
                    continue
                except _NoParse:
                    pass
            elif ch == "|":
                raise _NoParse
            elif ch == "\\":
                if pos + 1 >= len(text) or text[pos + 1] == "\n":
                    raise _NoParse
                out.append(text[pos : pos + 2])
                pos += 2
                continue
            out.append(ch)
            pos += 1
        return out

    def prompt(self, pos: int) -> tuple[list[_Node], int]:
        """Text and nested structures up to the next ``) ] : |`` at this level (or the end)."""
        text, start = self.text, pos
        out: list[_Node] = []
        while pos < len(text):
            ch = text[pos]
            if ch == "\\":
                if pos + 1 >= len(text) or text[pos + 1] == "\n":
                    raise _NoParse
                pos += 2
            elif ch in "([":
                if pos > start:
                    out.append(text[start:pos])
                nodes, pos = self.structure(pos)
                out.extend(nodes)
                start = pos
            elif ch in ")]:|":
                break
            else:
                pos += 1
        if pos > start:
            out.append(text[start:pos])
        return out, pos

    def at(self, pos: int) -> str:
        return self.text[pos] if pos < len(self.text) else ""

    def structure(self, pos: int) -> tuple[list[_Node], int]:
        """An emphasis kept as text, a prompt edit or an alternation opening at ``pos``."""
        opening = self.text[pos]
        first, pos = self.prompt(pos + 1)
        nxt = self.at(pos)
        if opening == "(":
            if nxt == ")":
                return ["(", *first, ")"], pos + 1
            if nxt == ":":
                second, pos = self.prompt(pos + 1)
                if self.at(pos) == ")":
                    return ["(", *first, ":", *second, ")"], pos + 1
            raise _NoParse
        if nxt == "]":
            return ["[", *first, "]"], pos + 1
        if nxt == "|":
            options = [first]
            while self.at(pos) == "|":
                option, pos = self.prompt(pos + 1)
                options.append(option)
            if self.at(pos) != "]":
                raise _NoParse
            return [_Alternate(options)], pos + 1
        if nxt != ":":
            raise _NoParse
        second, after_second = self.prompt(pos + 1)
        if self.at(after_second) == "]":
            # ``[after:when]``: the second part must be just the number.
            if len(second) == 1 and isinstance(second[0], str) and _WHEN_ONLY.fullmatch(second[0]):
                return [_Edit(None, first, _WHEN_ONLY.fullmatch(second[0]).group(1))], after_second + 1  # type: ignore[union-attr]
            raise _NoParse
        if self.at(after_second) == ":":
            m = _WHEN_CLOSE.match(self.text, after_second + 1)
            if m is not None:
                return [_Edit(first, second, m.group(1))], m.end()
        raise _NoParse


def _walk(nodes: Sequence[_Node]) -> "list[_Edit | _Alternate]":
    found: list[_Edit | _Alternate] = []
    for node in nodes:
        if isinstance(node, _Edit):
            found.append(node)
            found += _walk(node.before or [])
            found += _walk(node.after)
        elif isinstance(node, _Alternate):
            found.append(node)
            for option in node.options:
                found += _walk(option)
    return found


def _when_step(when: str, steps: int) -> int:
    value = float(when)
    if "." in when:
        value *= steps
    return min(steps, int(value))


def _text_at(nodes: Sequence[_Node], step: int, steps: int) -> str:
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Edit):
            chosen = (node.before or []) if step <= _when_step(node.when, steps) else node.after
            parts.append(_text_at(chosen, step, steps))
        else:
            parts.append(_text_at(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(parts)


def prompt_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """``text`` as ``(last step, text)`` pairs over ``steps`` steps, as AUTOMATIC1111 builds them.

    A prompt without editing or alternation gives ``[(steps, text)]``.
    """
    try:
        nodes = _Parser(text).top()
    except _NoParse:
        return [(steps, text)]
    marks = {steps}
    for node in _walk(nodes):
        if isinstance(node, _Alternate):
            marks.update(range(1, steps + 1))
        else:
            when = _when_step(node.when, steps)
            if when >= 1:
                marks.add(when)
    return [(t, _text_at(nodes, t, steps)) for t in sorted(marks)]


_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(text: str) -> list[tuple[str, float]]:
    """The ``AND`` parts of a prompt with their weights (a trailing ``:number``, else 1)."""
    parts = []
    for sub in _AND.split(text):
        m = _PART_WEIGHT.search(sub)
        if m is None:
            parts.append((sub, 1.0))
        else:
            parts.append((m.group(1), float(m.group(2)) if m.group(2) is not None else 1.0))
    return parts


@dataclass(frozen=True)
class PromptPlan:
    """What a request's prompt and negative prompt need, before anything is encoded."""

    #: Per ``AND`` part: its weight and its schedule.
    parts: tuple[tuple[float, tuple[tuple[int, str], ...]], ...]
    negative: tuple[tuple[int, str], ...]

    @property
    def plain(self) -> bool:
        """One prompt of weight 1 and no schedule on either side: the ordinary path."""
        return len(self.parts) == 1 and self.parts[0][0] == 1.0 and len(self.parts[0][1]) == 1 and len(self.negative) == 1


def plan_prompts(prompt: str, negative: str, steps: int) -> PromptPlan:
    parts = tuple((w, tuple(prompt_schedule(t, steps))) for t, w in split_and(prompt))
    return PromptPlan(parts, tuple(prompt_schedule(negative, steps)))


# -- encoding -------------------------------------------------------------------------------


def encode_request(components: "Components", request: "GenerationRequest", *, with_negative: bool) -> PromptEncoding:
    """The request's text conditioning; scheduled or composed prompts come with a schedule.

    A plain request is handed to ``components.encode_prompts`` untouched, so its
    conditioning (and image) is exactly the engine's ordinary one.
    """
    from heyim_desktop.core.lora_torch import with_prompts

    plan = plan_prompts(request.prompt, request.negative_prompt, request.steps)
    if plan.plain:
        text = plan.parts[0][1][0][1]
        if text != request.prompt.rstrip():  # ``cat:1`` is the prompt ``cat``
            request = with_prompts(request, text, request.negative_prompt)
        return components.encode_prompts(request, with_negative=with_negative)
    weights = tuple(w for w, _ in plan.parts)
    warnings: list[str] = []
    if not with_negative and (len(plan.parts) > 1 or weights != (1.0,)):
        if len(plan.parts) > 1:
            raise InvalidRequest(
                "prompt", "AND combines prompts through classifier-free guidance; set guidance above 1 "
                          "(this model or setting runs without it)")
        warnings.append(f"The prompt's weight :{weights[0]:g} acts through classifier-free guidance, "
                        "which is off for this job; it was ignored.")
        weights = (1.0,)

    positives: dict[str, PromptEncoding] = {}
    negatives: dict[str, PromptEncoding] = {}

    def positive(text: str) -> TextCond:
        if text not in positives:
            positives[text] = components.encode_prompts(with_prompts(request, text, ""), with_negative=False)
        return positives[text].cond

    def negative(text: str) -> PromptEncoding:
        # Encoded next to the empty prompt, so nothing pads it; the empty prompt's
        # conditioning evens out chunk counts later.
        if text not in negatives:
            negatives[text] = components.encode_prompts(with_prompts(request, "", text), with_negative=True)
        return negatives[text]

    parts = tuple(tuple((end, positive(text)) for end, text in schedule) for _, schedule in plan.parts)
    empty_pair = negative(plan.negative[0][1] if with_negative else "")
    uncond_schedule = None
    if with_negative:
        uncond_schedule = tuple((end, _need(negative(text).uncond)) for end, text in plan.negative)
    empty = empty_pair.cond
    for enc in [*positives.values(), *negatives.values()]:
        warnings.extend(w for w in enc.warnings if w not in warnings)
    schedule = PromptSchedule(parts, weights, uncond_schedule, empty)
    conds, uncond = schedule.at(0)
    return PromptEncoding(
        conds[0], uncond, tuple(warnings),
        next((e.truncated_prompt for e in positives.values() if e.truncated_prompt), None),
        next((e.truncated_negative for e in negatives.values() if e.truncated_negative), None),
        schedule=schedule,
    )


def _need(cond: TextCond | None) -> TextCond:
    if cond is None:  # pragma: no cover - encode_prompts gives an uncond when asked for one
        raise RuntimeError("the engine gave no negative conditioning")
    return cond


class ScheduleExtension(BaseExtension):
    """Hands the UNet each step's text conditioning of a :class:`PromptSchedule`.

    It runs before every other extension, so ControlNet and the rest see the step's text.
    The batch follows the job's guidance (:func:`heyim_desktop.core.guidance.batch_text`).
    """

    def __init__(self, schedule: PromptSchedule) -> None:
        self.schedule = schedule
        self._key: tuple[int, ...] | None = None
        self._text: TextCond | None = None

    def before_loop(self, state: "LoopState") -> None:
        self._key, self._text = None, None

    def before_unet(self, state: "LoopState", call: "UNetCall") -> None:
        from heyim_desktop.core.guidance import batch_text

        step = state.first_step + state.step_index
        key = self.schedule.key_at(step)
        if key != self._key or self._text is None:
            conds, uncond = self.schedule.at(step)
            self._text, self._key = batch_text(state.guidance, conds, uncond, len(state.generators)), key
        call.text = self._text


def composed_weights(prompts: PromptEncoding) -> tuple[float, ...] | None:
    """The ``AND`` weights guidance composes with, or None for one prompt of weight 1."""
    schedule = prompts.schedule
    if schedule is None or schedule.weights == (1.0,):
        return None
    return schedule.weights


def schedule_extensions(prompts: PromptEncoding) -> list[ScheduleExtension]:
    return [] if prompts.schedule is None else [ScheduleExtension(prompts.schedule)]
