"""The settings a model is made for: few-step models (LCM, Turbo, Lightning, Hyper) especially.

A model says so itself where it can (an LCM-distilled UNet has a guidance embedding; a
model shipped with the LCM scheduler wants it); otherwise a small table keyed by the
model's name knows the common few-step families. The result is
:class:`~heyim_desktop.core.capabilities.Recommended`, part of the engine's capabilities,
which the window applies when the user picks the model, and the CLI and the local API
apply (:func:`apply_recommended`) to what a job leaves unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from heyim_desktop.core.capabilities import Recommended

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest

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


def recommended_for_path(path: "str | Path") -> Recommended:
    """What the model at ``path`` is meant to run with, read from its files without loading it.

    The same answer the engine gives in its capabilities once loaded: a diffusers folder by
    its name, scheduler config and UNet (a guidance embedding is LCM-distilled); a
    diffusion-transformer family folder by its family; a single file by its file name; a
    Core ML folder by its model's name. Unreadable configs count as absent.
    """
    folder = Path(path)
    if folder.is_file():
        return recommended_for(folder.stem)
    index = _json(folder / "model_index.json")
    if index:
        from heyim_desktop.core.families import family_for_pipeline

        family = family_for_pipeline(str(index.get("_class_name", "")))
        if family is not None:
            return Recommended(steps=family.recommended_steps, guidance=family.recommended_guidance,
                               scheduler=family.sampler, source=family.source)
    if index or (folder / "unet").is_dir():
        unet = _json(folder / "unet" / "config.json")
        return recommended_for(
            folder.name, scheduler_config=_json(folder / "scheduler" / "scheduler_config.json"),
            guidance_embedding=unet.get("time_cond_proj_dim") is not None,
        )
    parts = [p for p in folder.parts if p.lower() not in _COREML_LAYOUT_PARTS]
    return recommended_for(parts[-1] if parts else "")


#: Folder names of Core ML layouts, skipped to find the model's own name.
_COREML_LAYOUT_PARTS = {"compiled", "packages", "split_einsum", "original", "resources", "coreml"}


def _json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Applied:
    """A request after the model's recommended settings filled what the user left unset."""

    request: "GenerationRequest"
    #: What was applied, for a log line or a response note; None when nothing was.
    note: str | None


def apply_recommended(
    request: "GenerationRequest", rec: Recommended, *, steps_set: bool, guidance_set: bool, scheduler_set: bool
) -> Applied:
    """``request`` with ``rec``'s steps, guidance and scheduler where the user did not set them."""
    changes: dict[str, Any] = {}
    if not steps_set and rec.steps is not None and rec.steps != request.steps:
        changes["steps"] = rec.steps
    if not guidance_set and rec.guidance is not None and rec.guidance != request.guidance:
        changes["guidance"] = rec.guidance
    if not scheduler_set and rec.scheduler and rec.scheduler != request.scheduler_name:
        changes["scheduler"] = rec.scheduler
    if not changes:
        return Applied(request, None)
    applied = describe(Recommended(changes.get("steps"), changes.get("guidance"), changes.get("scheduler")))
    where = f" (from {rec.source})" if rec.source else ""
    return Applied(request.replace(**changes), f"using the model's recommended settings: {applied}{where}")
