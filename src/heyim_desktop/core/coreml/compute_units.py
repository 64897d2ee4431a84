"""Compute units: the user's choice, and "AUTO" (time both, remember the faster).

Base M chips tend to run Stable Diffusion faster on the Neural Engine, Max and Ultra chips
on the GPU; which wins depends on the model's attention and size too, so AUTO measures one
UNet step on each and remembers the answer per model per machine.
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
from pathlib import Path
from typing import Callable

from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)

COMPUTE_UNITS = ("CPU_AND_NE", "ALL", "CPU_AND_GPU", "CPU_ONLY")
AUTO = "AUTO"
CHOICES = (AUTO, *COMPUTE_UNITS)
AUTO_CANDIDATES = ("CPU_AND_NE", "CPU_AND_GPU")
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
