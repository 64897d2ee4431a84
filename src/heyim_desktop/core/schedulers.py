"""Scheduler names a user picks, mapped onto diffusers' scheduler classes.

The names are AUTOMATIC1111's sampler names, so metadata written by either tool reads back
as the same scheduler. diffusers is imported only when a scheduler is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from heyim_desktop.core.errors import InvalidRequest


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    class_name: str
    overrides: tuple[tuple[str, Any], ...] = ()


SCHEDULERS: tuple[SchedulerSpec, ...] = (
    SchedulerSpec("DPM++ 2M", "DPMSolverMultistepScheduler",
                  (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", False))),
    SchedulerSpec("DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                  (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", True))),
    SchedulerSpec("Euler", "EulerDiscreteScheduler"),
    SchedulerSpec("Euler a", "EulerAncestralDiscreteScheduler"),
    SchedulerSpec("DDIM", "DDIMScheduler"),
    SchedulerSpec("PNDM", "PNDMScheduler", (("skip_prk_steps", True),)),
    SchedulerSpec("LMS", "LMSDiscreteScheduler"),
    SchedulerSpec("UniPC", "UniPCMultistepScheduler"),
    SchedulerSpec("LCM", "LCMScheduler"),
)

SCHEDULER_NAMES: tuple[str, ...] = tuple(s.name for s in SCHEDULERS)
DEFAULT_TXT2IMG = "DPM++ 2M"
DEFAULT_IMG2IMG = "PNDM"

_ALIASES = {
    "dpmsolvermultistep": "DPM++ 2M",
    "dpmpp2mkarras": "DPM++ 2M Karras",
    "keuler": "Euler",
    "eulerancestral": "Euler a",
    "keulera": "Euler a",
    "keulerancestral": "Euler a",
    "plms": "PNDM",
    "klms": "LMS",
    "unipcmultistep": "UniPC",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "p"))


_BY_KEY = {_key(s.name): s for s in SCHEDULERS}
_BY_KEY.update({k: _BY_KEY[_key(v)] for k, v in _ALIASES.items()})


def canonical_name(name: str) -> str:
    """Return the canonical scheduler name for ``name`` (any case, A1111 or diffusers alias)."""
    spec = _BY_KEY.get(_key(name))
    if spec is None:
        raise InvalidRequest("scheduler", f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}")
    return spec.name


def build_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """Build the named diffusers scheduler from a model's scheduler config."""
    import diffusers

    spec = _BY_KEY[_key(canonical_name(name))]
    cls = getattr(diffusers, spec.class_name)
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    # Keys another scheduler class wrote (PNDM's skip_prk_steps, ...) are dropped, not warned about.
    config = {k: v for k, v in dict(base_config).items() if k in accepted}
    # A model converted for a few-step scheduler may carry options others reject; the
    # spec's overrides win over the model's config.
    config.update(dict(spec.overrides))
    return cls.from_config(config)
