"""Compute units: the defaults by model and chip, the user's choice, and "AUTO" (measure, remember).

The default rule (:func:`default_units`), from Apple's published Stable Diffusion benchmarks
(the ml-stable-diffusion README's per-device table recommends CPU_AND_NE with SPLIT_EINSUM
on base M1/M2 chips and CPU_AND_GPU with ORIGINAL attention on Max and Ultra chips, whose
GPUs have 24 to 76 cores against the same 16-core Neural Engine):

* original-attention models: the GPU (the Neural Engine runs that layout poorly);
* split_einsum models: the GPU on Max and Ultra chips, the Neural Engine elsewhere (base
  and Pro chips, and chips we cannot name).

AUTO measures one UNet step per candidate (after a warm-up) and remembers the answer per
model per machine. For split_einsum models the candidates are CPU_AND_NE, CPU_AND_GPU and
ALL: the Neural Engine compile this costs is the one the default needs anyway, and ALL reuses
it. For original-attention models the only candidate is CPU_AND_GPU, so AUTO measures nothing
and never forces a minutes-long Neural Engine compile of a layout the Neural Engine runs badly
(the user can still pick CPU_AND_NE or ALL by hand).

A compute-units value can carry per-component choices and the reduce-memory switch
(:func:`parse_units`): ``"AUTO;VAEDecoder=CPU_AND_GPU;reduce-memory"``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)

COMPUTE_UNITS = ("CPU_AND_NE", "ALL", "CPU_AND_GPU", "CPU_ONLY")
AUTO = "AUTO"
CHOICES = (AUTO, *COMPUTE_UNITS)
AUTO_CANDIDATES = ("CPU_AND_NE", "CPU_AND_GPU", "ALL")
AUTO_CANDIDATES_ORIGINAL = ("CPU_AND_GPU",)
#: Component names a per-component choice may name.
#: "ControlNet" applies to every model in the folder's controlnet/.
COMPONENTS = ("TextEncoder", "TextEncoder2", "Unet", "UnetChunk1", "UnetChunk2", "ControlledUnet", "VAEDecoder", "VAEEncoder",
              "ControlNet")
REDUCE_MEMORY = "reduce-memory"
FULL_MEMORY = "full-memory"
#: Physical memory at or under which reduce-memory is the default (8 GB Macs).
REDUCE_MEMORY_BELOW = 8 * 2**30 + 2**28
#: For people: what each choice means (the Preferences menu shows these).
LABELS = {
    AUTO: "Automatic (measure once, use the faster)",
    "CPU_AND_NE": "Neural Engine",
    "ALL": "Neural Engine, GPU and CPU",
    "CPU_AND_GPU": "GPU",
    "CPU_ONLY": "CPU only (slow)",
}
_STORE = "coreml-compute-units.json"


def normalise(units: str) -> str:
    value = units.strip().upper().replace("-", "_")
    if value not in CHOICES:
        raise ModelError(f"Unknown compute units {units!r}; choose one of {', '.join(CHOICES)}.")
    return value


def machine_id() -> str:
    """The chip, e.g. "arm64 Apple M2 Max": choices are remembered per machine."""
    chip = ""
    if sys.platform == "darwin":
        try:
            chip = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            chip = ""
    return f"{platform.machine()} {chip or platform.processor() or 'unknown'}".strip()


def _sysctl(name: str) -> str:
    if sys.platform != "darwin":
        return ""
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def chip_name() -> str:
    """The chip as macOS names it ("Apple M2 Max"), "" elsewhere."""
    return _sysctl("machdep.cpu.brand_string")


def physical_memory() -> int:
    """Bytes of RAM (sysctl hw.memsize on macOS, sysconf elsewhere; 0 when unknown)."""
    raw = _sysctl("hw.memsize")
    if raw.isdigit():
        return int(raw)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def chip_tier(chip: str) -> str:
    """"base", "pro", "max", "ultra" for Apple M chips; "" when the name says nothing."""
    words = chip.lower().split()
    if not any(w.startswith("m") and w[1:].isdigit() for w in words):
        return ""
    for tier in ("ultra", "max", "pro"):
        if tier in words:
            return tier
    return "base"


def default_units(attention: str, chip: str) -> str:
    """The default compute units for a model's attention on a chip (see the module's rule)."""
    if attention != "split_einsum":
        return "CPU_AND_GPU"
    return "CPU_AND_GPU" if chip_tier(chip) in ("max", "ultra") else "CPU_AND_NE"


def auto_candidates(attention: str) -> tuple[str, ...]:
    return AUTO_CANDIDATES if attention == "split_einsum" else AUTO_CANDIDATES_ORIGINAL


@dataclass(frozen=True)
class UnitsChoice:
    """A parsed compute-units value: the model's units (None: the default), per-component
    overrides, and reduce-memory (None: on for 8 GB Macs)."""

    units: str | None = None
    components: tuple[tuple[str, str], ...] = ()
    reduce_memory: bool | None = None

    def text(self) -> str:
        parts = [self.units or ""] + [f"{n}={u}" for n, u in self.components]
        if self.reduce_memory is not None:
            parts.append(REDUCE_MEMORY if self.reduce_memory else FULL_MEMORY)
        return ";".join(parts).strip(";") if any(parts[1:]) else (self.units or "")


def parse_units(value: str | None) -> UnitsChoice:
    """``"UNITS;NAME=UNITS;...;reduce-memory"`` (each part optional) as a :class:`UnitsChoice`."""
    if not value or not value.strip():
        return UnitsChoice()
    units: str | None = None
    components: list[tuple[str, str]] = []
    reduce: bool | None = None
    for part in (p.strip() for p in value.replace(",", ";").split(";")):
        if not part:
            continue
        if part.lower() in (REDUCE_MEMORY, FULL_MEMORY):
            reduce = part.lower() == REDUCE_MEMORY
        elif "=" in part:
            name, _, raw = (x.strip() for x in part.partition("="))
            match = next((c for c in COMPONENTS if c.lower() == name.lower()), None)
            if match is None:
                raise ModelError(f"Unknown Core ML component {name!r}; choose one of {', '.join(COMPONENTS)}.")
            chosen = normalise(raw)
            if chosen == AUTO:
                raise ModelError(f"{match}: choose fixed compute units for one component, not AUTO.")
            components.append((match, chosen))
        else:
            units = normalise(part)
    return UnitsChoice(units, tuple(components), reduce)


def compose_units(units: str, components: str = "", memory: str = "") -> str | None:
    """The compute-units value for the loader from the three Preferences fields (None: defaults);
    raises ``ModelError`` naming a bad part."""
    text = ";".join(p for p in (units.strip(), components.strip().replace(",", ";"), memory.strip()) if p)
    if not text:
        return None
    parse_units(text)  # checked here, so a typo is reported where it was typed
    return text


#: ``time_step(units) -> seconds`` for one UNet step (after a warm-up) on those units.
StepTimer = Callable[[str], float]


class ComputeUnitChooser:
    """Remembers the measured best compute units in a small JSON file in the cache folder."""

    def __init__(self, path: Path | None = None, machine: str | None = None) -> None:
        if path is None:
            from heyim_desktop.core import paths

            path = paths.cache_dir() / _STORE
        self.path = path
        self.machine = machine or machine_id()
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, dict[str, object]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def remembered(self, model_key: str) -> str | None:
        entry = self._load().get(self.machine, {}).get(model_key)
        choice = entry.get("choice") if isinstance(entry, dict) else None
        return choice if choice in COMPUTE_UNITS else None

    def choose(self, model_key: str, time_step: StepTimer, candidates: tuple[str, ...] = AUTO_CANDIDATES) -> str:
        """The remembered choice for ``model_key``, else measure each candidate and remember."""
        with self._lock:
            known = self.remembered(model_key)
            if known:
                return known
            timings: dict[str, float] = {}
            for units in candidates:
                try:
                    timings[units] = float(time_step(units))
                except Exception as exc:  # noqa: BLE001 - a unit that fails to run simply loses
                    log.warning("timing %s on %s failed: %s", model_key, units, exc)
            if not timings:
                raise ModelError("The model could not run on the Neural Engine or the GPU.")
            best = min(timings, key=lambda u: timings[u])
            log.info("compute units for %s on %s: %s (%s)", model_key, self.machine, best, timings)
            data = self._load()
            data.setdefault(self.machine, {})[model_key] = {"choice": best, "seconds": timings, "measured": time.time()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(tmp, self.path)
            return best

    def forget(self, model_key: str | None = None) -> None:
        """Measure again next time (one model, or all on this machine)."""
        with self._lock:
            data = self._load()
            mine = data.get(self.machine, {})
            if model_key is None:
                mine.clear()
            else:
                mine.pop(model_key, None)
            if self.path.exists():
                self.path.write_text(json.dumps(data, indent=2), encoding="utf-8")
