"""Every model HeyIm can see, from every source, with its status.

Sources: the app's models folder (data dir), the repo's ``models/`` folder in development,
folders the user added in Preferences, the Hugging Face cache (diffusers snapshots) and the
built-in demo model. Nothing here loads weights or imports torch: listing is cheap and safe.
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from heyim_desktop.core import paths
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.loading import DEMO_REF
from heyim_desktop.core.model_files import is_checkpoint_candidate
from heyim_desktop.models.inspect import (
    DEMO_NAME, folder_size, hf_cache_dir, hf_cache_snapshots, inspect_file, inspect_folder,
)
from heyim_desktop.models.types import ModelInfo, ModelStatus

__all__ = ["ModelLibrary", "ModelInfo", "ModelStatus", "inspect_folder", "app_models_dir"]

log = logging.getLogger(__name__)


def app_models_dir() -> Path:
    return paths.data_dir() / "models"


def _is_partial(path: Path) -> bool:
    # Downloads and imports in progress live in hidden ".name.partial" folders/files.
    return path.name.startswith(".")


class ModelLibrary:
    """``ModelLibrary(extra_folders).list()`` -> ready models first, then the rest, then the demo."""

    def __init__(
        self,
        extra_folders: Iterable[str | os.PathLike[str]] = (),
        *,
        include_demo: bool = True,
        hf_cache: str | os.PathLike[str] | None | bool = True,
    ) -> None:
        self.extra_folders = [Path(f).expanduser() for f in extra_folders]
        self.include_demo = include_demo
        #: True: huggingface_hub's cache dir; a path: that folder; False/None: not scanned.
        self.hf_cache = hf_cache

    @property
    def models_dir(self) -> Path:
        return app_models_dir()

    def roots(self) -> list[tuple[Path, str]]:
        roots = [(app_models_dir(), "app")]
        repo_models = Path(__file__).resolve().parents[3] / "models"
        if (repo_models / "README.md").is_file():
            roots.append((repo_models, "repo"))
        roots += [(f, "user") for f in self.extra_folders]
        return roots

    def add_folder(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ModelError(f"{path} is not a folder.")
        if path not in self.extra_folders:
            self.extra_folders.append(path)
        return path

    def remove_folder(self, folder: str | os.PathLike[str]) -> None:
        path = Path(folder).expanduser().resolve()
        self.extra_folders = [f for f in self.extra_folders if f.resolve() != path]

    def _hf_cache_path(self) -> Path | None:
        if self.hf_cache is True:
            return hf_cache_dir()
        if self.hf_cache:
            return Path(self.hf_cache)
        return None

    def _scan_root(self, root: Path, source: str) -> Iterable[ModelInfo]:
        from heyim_desktop.models.upscalers import UPSCALER_FOLDERS

        if root.name in UPSCALER_FOLDERS:  # a folder of upscalers: list_upscalers() lists those
            return
        itself = inspect_folder(root, source)
        if itself is not None:  # the folder itself is one model
            yield itself
            return
        for entry in sorted(root.iterdir()):
            if _is_partial(entry):
                continue
            try:
                if entry.is_dir():
                    found = inspect_folder(entry, source)
                    if found is not None:
                        yield found
                elif is_checkpoint_candidate(entry):
                    yield inspect_file(entry, source)
            except OSError as exc:
                log.warning("cannot read %s: %s", entry, exc)

    def list(self) -> list[ModelInfo]:
        """All models, ready ones first, then by name. Never raises for a bad folder or file."""
        found: dict[str, ModelInfo] = {}
        for root, source in self.roots():
            if not root.is_dir():
                continue
            try:
                for info in self._scan_root(root, source):
                    found.setdefault(str(Path(info.ref).resolve()), info)
            except OSError as exc:
                log.warning("cannot read %s: %s", root, exc)
        cache = self._hf_cache_path()
        if cache is not None:
            try:
                for snap, repo_id, _repo in hf_cache_snapshots(cache):
                    cached = inspect_folder(snap, "hf-cache", name=repo_id)
                    if cached is not None:
                        found.setdefault(str(snap.resolve()), cached)
            except OSError as exc:
                log.warning("cannot read the Hugging Face cache %s: %s", cache, exc)
        # LoRAs and embeddings are listed by models.networks.NetworkLibrary, not as checkpoints.
        models = sorted((m for m in found.values() if m.kind not in ("lora", "embedding")),
                        key=lambda m: (not m.ready, m.name.lower()))
        if self.include_demo:
            models.append(ModelInfo(DEMO_NAME, DEMO_REF, "demo", "SD1", 0, ModelStatus.READY, "", "built-in"))
        return models

    def list_upscalers(self) -> "builtins.list[ModelInfo]":
        """Upscaler models (kind "upscaler") from the usual folders under every root; see models.upscalers."""
        from heyim_desktop.models.upscalers import scan_upscalers, upscaler_folders

        roots = self.roots()
        sources = {folder: source for root, source in roots for folder in upscaler_folders([root])}
        return scan_upscalers([root for root, _ in roots], sources)

    def find(self, ref_or_name: str) -> ModelInfo | None:
        """By ref (path), exact name, or a unique case-insensitive name."""
        models = self.list()
        for info in models:
            if ref_or_name in (info.ref, info.name):
                return info
        resolved = str(Path(ref_or_name).expanduser().resolve()) if ref_or_name else ""
        for info in models:
            if info.kind != "demo" and str(Path(info.ref).resolve()) == resolved:
                return info
        folded = [m for m in models if m.name.lower() == ref_or_name.lower()]
        return folded[0] if len(folded) == 1 else None

    def refresh(self, info: ModelInfo) -> ModelInfo:
        """Re-inspect one model (after a copy finished, say)."""
        path = Path(info.ref)
        if info.kind == "demo":
            return info
        if path.is_file():
            return inspect_file(path, info.source)
        return inspect_folder(path, info.source, name=info.name) or info

    def delete(self, info: ModelInfo) -> None:
        """Remove a model's files from disk (the caller has asked the user). HF-cache models drop
        their whole cache entry, so no orphan blobs are left behind."""
        if info.kind == "demo":
            raise ModelError("The built-in demo model cannot be deleted.")
        path = Path(info.ref)
        if info.source == "hf-cache":
            repo = path.parents[1]  # models--org--name/snapshots/<commit>
            if not repo.name.startswith("models--"):
                raise ModelError(f"{path} is not in a Hugging Face cache layout.")
            shutil.rmtree(repo)
        elif info.kind == "upscaler" and path.is_file() and (path.parent / ".heyim-download.json").is_file():
            shutil.rmtree(path.parent)  # a downloaded upscaler: its folder (file + manifest) is HeyIm's
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
            sidecar = path.with_suffix(".yaml")
            if sidecar.is_file():
                sidecar.unlink()
        else:
            raise ModelError(f"{info.name} is already gone ({path}).")
        log.info("deleted model %s (%s)", info.name, path)

    def size_on_disk(self, info: ModelInfo) -> int:
        path = Path(info.ref)
        return folder_size(path) if path.is_dir() else path.stat().st_size
