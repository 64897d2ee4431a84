"""Every model HeyIm can see, from every source, with its status.

Sources: the app's models folder (data dir), the repo's ``models/`` folder in development,
folders the user added in Preferences, and the built-in demo model.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from heyim_desktop.core import paths
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.loading import DEMO_REF
from heyim_desktop.core.model_folder import check_diffusers_folder

log = logging.getLogger(__name__)


class ModelStatus(enum.Enum):
    READY = "ready"
    INCOMPLETE = "incomplete"
    UNSAFE = "unsafe"


@dataclass(frozen=True)
class ModelInfo:
    """One model as the library lists it. ``ref`` is what a GenerationRequest's ``model`` holds."""

    name: str
    ref: str
    kind: str  # "diffusers", "safetensors", "coreml", "demo"
    base: str  # "SD1", "SD2", "SDXL", "unknown"
    size_bytes: int
    status: ModelStatus
    problem: str = ""
    source: str = ""

    @property
    def ready(self) -> bool:
        return self.status is ModelStatus.READY


def app_models_dir() -> Path:
    return paths.data_dir() / "models"


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def _guess_base(folder: Path) -> str:
    import json

    try:
        cfg = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    hidden = cfg.get("hidden_size")
    return {768: "SD1", 1024: "SD2"}.get(hidden, "unknown")


def inspect_folder(folder: Path, source: str = "") -> ModelInfo | None:
    """Describe ``folder`` if it looks like a model (complete or not); None if it is not one."""
    if not (folder / "model_index.json").exists():
        return None
    try:
        index = check_diffusers_folder(folder)
    except ModelError as exc:
        return ModelInfo(folder.name, str(folder), "diffusers", "unknown", _folder_size(folder),
                         ModelStatus.INCOMPLETE, str(exc), source)
    name = "HeyIm demo (tiny random model)" if index.get("_heyim_demo") else folder.name
    return ModelInfo(name, str(folder), "diffusers", _guess_base(folder), _folder_size(folder),
                     ModelStatus.READY, "", source)


class ModelLibrary:
    def __init__(self, extra_folders: Iterable[str | os.PathLike[str]] = (), *, include_demo: bool = True) -> None:
        self.extra_folders = [Path(f).expanduser() for f in extra_folders]
        self.include_demo = include_demo

    def roots(self) -> list[tuple[Path, str]]:
        roots = [(app_models_dir(), "app")]
        repo_models = Path(__file__).resolve().parents[3] / "models"
        if (repo_models / "README.md").is_file():
            roots.append((repo_models, "repo"))
        roots += [(f, "user") for f in self.extra_folders]
        return roots

    def list(self) -> list[ModelInfo]:
        """All models, ready ones first, then by name. Never raises for a bad folder."""
        found: dict[str, ModelInfo] = {}
        for root, source in self.roots():
            if not root.is_dir():
                continue
            candidates = [root] if (root / "model_index.json").exists() else sorted(p for p in root.iterdir() if p.is_dir())
            for folder in candidates:
                try:
                    info = inspect_folder(folder, source)
                except OSError as exc:
                    log.warning("cannot read %s: %s", folder, exc)
                    continue
                if info is not None:
                    found.setdefault(str(folder.resolve()), info)
        models = sorted(found.values(), key=lambda m: (not m.ready, m.name.lower()))
        if self.include_demo:
            models.append(ModelInfo("HeyIm demo (tiny random model)", DEMO_REF, "demo", "SD1", 0,
                                    ModelStatus.READY, "", "built-in"))
        return models

    def find(self, ref_or_name: str) -> ModelInfo | None:
        for info in self.list():
            if ref_or_name in (info.ref, info.name):
                return info
        return None
