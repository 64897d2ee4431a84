"""The settings a model is made for: few-step models (LCM, Turbo, Lightning, Hyper) especially.

A model says so itself where it can (an LCM-distilled UNet has a guidance embedding; a
model shipped with the LCM scheduler wants it); otherwise a small table keyed by the
model's name knows the common few-step families. The result is
:class:`~heyim_desktop.core.capabilities.Recommended`, part of the engine's capabilities,
which the window applies when the user picks the model.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from heyim_desktop.core.capabilities import Recommended

#: (name pattern, steps, guidance, scheduler, what it is). The first match wins; ``{n}``
#: steps come from the name where it says them ("4step", "8-steps").
_KNOWN: tuple[tuple[str, int, float, str, str], ...] = (
    (r"sd[-_ ]?xl[-_ ]?turbo", 1, 0.0, "Euler a", "SDXL-Turbo: 1-4 steps, no guidance"),
    (r"sd[-_ ]?(2[-_.]?1[-_ ]?)?turbo", 1, 0.0, "Euler a", "SD-Turbo: 1-4 steps, no guidance"),
    (r"lightning", 4, 0.0, "Euler", "Lightning: as many steps as it was distilled for, no guidance"),
    (r"hyper[-_ ]?s(d|dxl)", 8, 0.0, "DDIM", "Hyper-SD: as many steps as it was distilled for, no guidance"),
    (r"\blcm\b|lcm[-_]", 4, 1.5, "LCM", "LCM: 4-8 steps with the LCM scheduler, guidance 1-2"),
    (r"\btcd\b", 4, 0.0, "Euler a", "TCD: 4-8 steps, no guidance"),
)
_STEPS_IN_NAME = re.compile(r"(\d{1,2})[-_ ]?steps?(?![a-z])", re.I)
#: LCM-distilled UNets (a guidance embedding) were trained for 4-8 steps at w = 8.
LCM_DISTILLED = Recommended(steps=4, guidance=8.0, scheduler="LCM", source="model config (LCM-distilled UNet)")


def recommended_for(
    name: str, *, scheduler_config: Mapping[str, Any] | None = None, guidance_embedding: bool = False
) -> Recommended:
    """What ``name`` (a folder or file name) with this config is meant to run with.

    An empty :class:`Recommended` when nothing is known: the user's settings stay.
    """
    if guidance_embedding:
        return LCM_DISTILLED
    lowered = name.lower()
    config_class = str((scheduler_config or {}).get("_class_name", ""))
    for pattern, steps, guidance, scheduler, what in _KNOWN:
        if re.search(pattern, lowered):
            said = _STEPS_IN_NAME.search(lowered)
            n = int(said.group(1)) if said and 1 <= int(said.group(1)) <= 50 else steps
            if "cfg" in lowered and guidance == 0.0:
                guidance = 5.0  # "...-CFG" variants keep classifier-free guidance
            return Recommended(steps=n, guidance=guidance, scheduler=scheduler, source=f"known model ({what})")
    if config_class == "LCMScheduler":
        return Recommended(steps=4, guidance=1.5, scheduler="LCM", source="model config (LCM scheduler)")
    return Recommended()


def describe(rec: Recommended) -> str:
    """``4 steps, guidance 0, Euler a`` (empty when nothing is recommended)."""
    parts = []
    if rec.steps is not None:
        parts.append(f"{rec.steps} step{'s' if rec.steps != 1 else ''}")
    if rec.guidance is not None:
        parts.append(f"guidance {rec.guidance:g}")
    if rec.scheduler:
        parts.append(rec.scheduler)
    return ", ".join(parts)
