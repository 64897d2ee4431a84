"""User preferences shared by the window, the CLI and the servers: one JSON file, written atomically.

Window geometry and other purely visual state live in QSettings (ui); everything a headless
front end also needs lives here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heyim_desktop.core import paths
from heyim_desktop.core.devices import MEMORY_MODES, PRECISIONS
from heyim_desktop.core.storage import atomic_write_bytes, writing

log = logging.getLogger(__name__)

FILE_NAME = "preferences.json"
DEVICES = ("auto", "cpu", "cuda", "mps", "coreml")


@dataclass(frozen=True)
class Preferences:
    #: Extra folders scanned for models (besides the app's own models folder).
    model_folders: tuple[str, ...] = ()
    #: Where the history keeps its images; empty = the data dir's default.
    output_folder: str = ""
    default_scheduler: str = "DPM++ 2M"
    default_steps: int = 30
    default_guidance: float = 7.5
    device: str = "auto"
    #: Number format of PyTorch models (core.devices.PRECISIONS); applies at the next model load.
    precision: str = "auto"
    #: How Z-Image / FLUX.2 [klein] / SD 3.5 models use memory (core.devices.MEMORY_MODES); next load.
    memory: str = "auto"
    #: Core ML compute units ("" = the model's own default; AUTO measures once per model and Mac).
    coreml_compute_units: str = ""
    #: Per-component Core ML units over that, "VAEDecoder=CPU_AND_GPU, TextEncoder=CPU_ONLY" ("" = none).
    coreml_component_units: str = ""
    #: Core ML memory mode: "" (reduce on Macs with 8 GB or less), "reduce-memory" or "full-memory".
    coreml_memory: str = ""
    #: Keep only the newest N history entries; 0 = unlimited.
    keep_limit: int = 0
    #: Minutes without a job after which the model is unloaded (its engine process ends); 0 = never.
    idle_unload_minutes: int = 0
    #: The model reference used last (preloaded at launch).
    last_model: str = ""
    #: Closing the window keeps the app in the menu bar / tray.
    keep_running_in_tray: bool = True
    api_enabled: bool = False
    api_port: int = 5858
    #: Send generations to a Redis queue instead of the local worker; empty = local.
    remote_queue_url: str = ""
    #: Model ref (a Z-Image / FLUX.2 [klein] / SD 3.5 folder) -> the GGUF text encoder file chosen for it in
    #: the Models window, used instead of the folder's own (core.families.text_encoder_gguf).
    text_encoders: dict[str, str] = field(default_factory=dict, compare=False)
    #: The last settings used in the window (prompt panel and settings panel), restored at launch.
    last_settings: dict[str, Any] = field(default_factory=dict, compare=False)

    def replace(self, **changes: Any) -> Preferences:
        return dataclasses.replace(self, **changes)


def text_encoder_for(prefs: Preferences, ref: str) -> str | None:
    """The GGUF text encoder chosen for the model ``ref`` (Preferences.text_encoders), matched by path."""
    if not prefs.text_encoders:
        return None
    if ref in prefs.text_encoders:
        return prefs.text_encoders[ref]
    try:
        wanted = Path(ref).expanduser().resolve()
        return next((v for k, v in prefs.text_encoders.items() if Path(k).expanduser().resolve() == wanted), None)
    except (OSError, RuntimeError, ValueError):
        return None


def _path(root: Path | None) -> Path:
    return (root or paths.data_dir()) / FILE_NAME


def load_preferences(root: Path | None = None) -> Preferences:
    """Read preferences; a missing or damaged file gives defaults (a damaged one is kept aside)."""
    path = _path(root)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Preferences()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("preferences file %s is unreadable (%s); using defaults", path, exc)
        try:
            os.replace(path, path.with_suffix(".damaged.json"))
        except OSError:
            pass
        return Preferences()
    if not isinstance(raw, dict):
        return Preferences()
    defaults = Preferences()
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Preferences):
        if f.name not in raw:
            continue
        value = raw[f.name]
        default = getattr(defaults, f.name)
        if isinstance(default, tuple):
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                kwargs[f.name] = tuple(value)
        elif isinstance(default, bool):
            if isinstance(value, bool):
                kwargs[f.name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kwargs[f.name] = type(default)(value)
        elif isinstance(value, type(default)):
            kwargs[f.name] = value
    if "text_encoders" in kwargs:  # paths only, both sides strings
        kwargs["text_encoders"] = {k: v for k, v in kwargs["text_encoders"].items()
                                   if isinstance(k, str) and isinstance(v, str) and k and v}
    prefs = Preferences(**kwargs)
    if prefs.device not in DEVICES:
        prefs = prefs.replace(device="auto")
    if prefs.precision not in PRECISIONS:
        prefs = prefs.replace(precision="auto")
    if prefs.memory not in MEMORY_MODES:
        prefs = prefs.replace(memory="auto")
    if prefs.idle_unload_minutes < 0:
        prefs = prefs.replace(idle_unload_minutes=0)
    return prefs


def save_preferences(prefs: Preferences, root: Path | None = None) -> None:
    """Write the preferences atomically; a full disk is a DiskFull error and the old file stays."""
    path = _path(root)
    data = dataclasses.asdict(prefs)
    data["model_folders"] = list(prefs.model_folders)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    with writing(path.parent, "the preferences"):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode("utf-8"), what="the preferences")
