"""ControlNets in the model library.

They live where users already keep them: AUTOMATIC1111's ``models/ControlNet`` (and the
extension's own ``extensions/sd-webui-controlnet/models``), ComfyUI's ``models/controlnet``,
or a ``ControlNet`` folder inside any folder added in Preferences. A ControlNet is a
diffusers folder or one ``.safetensors`` file; its base family comes from its
cross-attention width. T2I-Adapters (TencentARC) live in the same folders and are listed
with kind "t2i-adapter"; their family ("SD": 1.x/2.x, or "SDXL") comes from their adapter type.
Nothing here loads weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from heyim_desktop.core.control_preprocess import NetworkPreprocessor
from heyim_desktop.core.controlnet_models import controlnet_cross_dim, family_for_cross_dim, is_controlnet_file
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import FileKind, file_size, sniff
from heyim_desktop.models.inspect import folder_size
from heyim_desktop.models.types import ModelInfo, ModelStatus

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models.library import ModelLibrary

log = logging.getLogger(__name__)

#: Folder names (any case) that hold ControlNets.
CONTROLNET_FOLDERS = frozenset({"controlnet", "controlnets"})
#: Where the extension keeps the annotators' weights, inside a ControlNet folder.
ANNOTATOR_FOLDER = "annotator"
_BASES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}
MAX_DEPTH = 3


def _base(dim: int | None) -> str:
    return "unknown" if dim is None else _BASES.get(family_for_cross_dim(dim), "unknown")


#: ModelInfo.kind of a T2I-Adapter listed with the ControlNets.
ADAPTER_KIND = "t2i-adapter"


def _inspect_adapter(path: Path, source: str) -> ModelInfo | None:
    """A T2I-Adapter folder or file as the library lists it, or None when it is not one."""
    from heyim_desktop.core.t2i_adapter import ORIGINAL_LAYOUT, adapter_family, is_adapter, is_original_layout, read_config

    if is_original_layout(path):
        return ModelInfo(path.stem, str(path), ADAPTER_KIND, "unknown", file_size(path), ModelStatus.UNSUPPORTED,
                         ORIGINAL_LAYOUT, source)
    if not is_adapter(path):
        return None
    name = path.name if path.is_dir() else path.stem
    size = folder_size(path) if path.is_dir() else file_size(path)
    if path.is_dir() and not (path / "diffusion_pytorch_model.safetensors").is_file():
        return ModelInfo(name, str(path), ADAPTER_KIND, "unknown", size, ModelStatus.INCOMPLETE,
                         "diffusion_pytorch_model.safetensors is missing", source)
    base = "SDXL" if adapter_family(read_config(path)) == "sdxl" else "SD"
    return ModelInfo(name, str(path), ADAPTER_KIND, base, size, ModelStatus.READY, "", source)


def is_adapter_info(info: ModelInfo) -> bool:
    return info.kind == ADAPTER_KIND


def inspect_controlnet(path: Path, source: str = "") -> ModelInfo | None:
    """A ControlNet (or T2I-Adapter) folder or file as the library lists it, or None when it is neither."""
    try:
        adapter = _inspect_adapter(path, source)
        if adapter is not None:
            return adapter
        if path.is_dir():
            config = path / "config.json"
            if not config.is_file():
                return None
            data = json.loads(config.read_text(encoding="utf-8"))
            if data.get("_class_name") != "ControlNetModel":
                return None
            weights = path / "diffusion_pytorch_model.safetensors"
            size = folder_size(path)
            if not weights.is_file():
                return ModelInfo(path.name, str(path), "controlnet", "unknown", size, ModelStatus.INCOMPLETE,
                                 "diffusion_pytorch_model.safetensors is missing", source)
            return ModelInfo(path.name, str(path), "controlnet", _base(controlnet_cross_dim(path)), size,
                             ModelStatus.READY, "", source)
        suffix = path.suffix.lower()
        if suffix not in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
            return None
        size = file_size(path)
        if sniff(path) is FileKind.PICKLE:
            return ModelInfo(path.stem, str(path), "controlnet", "unknown", size, ModelStatus.UNSAFE,
                             "a pickle file, never loaded: get the .safetensors version of this ControlNet", source)
        if suffix != ".safetensors" or not is_controlnet_file(path):
            return None
        return ModelInfo(path.stem, str(path), "controlnet", _base(controlnet_cross_dim(path)), size,
                         ModelStatus.READY, "", source)
    except (OSError, ValueError, ModelError) as exc:
        log.warning("cannot read ControlNet %s: %s", path, exc)
        return None


def _controlnet_folders(root: Path) -> Iterator[Path]:
    if root.name.lower() in CONTROLNET_FOLDERS:
        yield root
    levels = [root, root / "models", root / "extensions" / "sd-webui-controlnet"]
    for level in levels:
        try:
            children = list(level.iterdir()) if level.is_dir() else []
        except OSError:
            continue
        for child in children:
            if child.is_dir() and (child.name.lower() in CONTROLNET_FOLDERS
                                   or (level.name == "sd-webui-controlnet" and child.name == "models")):
                yield child


def _entries(folder: Path, depth: int) -> Iterator[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        log.warning("cannot read %s: %s", folder, exc)
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name == ANNOTATOR_FOLDER:
            continue
        if entry.is_dir():
            if (entry / "config.json").is_file():
                yield entry
            elif depth > 0:
                yield from _entries(entry, depth - 1)
        elif entry.is_file():
            yield entry


class ControlNetLibrary:
    """The ControlNets found under the model library's folders."""

    def __init__(self, library: "ModelLibrary") -> None:
        self.library = library

    def folders(self) -> list[Path]:
        out: list[Path] = []
        for root, _source in self.library.roots():
            if root.is_dir():
                out.extend(f for f in _controlnet_folders(root) if f not in out)
        return out

    def all(self) -> list[ModelInfo]:
        found: dict[str, ModelInfo] = {}
        for root, source in self.library.roots():
            if not root.is_dir():
                continue
            for folder in _controlnet_folders(root):
                for entry in _entries(folder, MAX_DEPTH):
                    info = inspect_controlnet(entry, source)
                    if info is not None:
                        found.setdefault(str(entry.resolve()), info)
        return sorted(found.values(), key=lambda m: (not m.ready, m.name.lower()))

    def ready(self) -> list[ModelInfo]:
        return [m for m in self.all() if m.ready]

    def find(self, name: str) -> ModelInfo | None:
        """By name, or A1111's ``name [hash]`` title, case-insensitively when unique."""
        bare = name.split(" [", 1)[0].strip()
        ready = self.ready()
        exact = [m for m in ready if m.name in (name, bare)]
        if exact:
            return exact[0]
        folded = [m for m in ready if m.name.lower() == bare.lower()]
        return folded[0] if len(folded) == 1 else None

    def annotator_files(self) -> list[Path]:
        """Weights files in the ControlNet folders' ``annotator`` subfolders (any depth)."""
        out: list[Path] = []
        for folder in self.folders():
            ann = folder / ANNOTATOR_FOLDER
            if ann.is_dir():
                out.extend(p for p in ann.rglob("*") if p.is_file())
        return out

    def network_preprocessors(self) -> list[tuple[NetworkPreprocessor, bool]]:
        from heyim_desktop.core.control_preprocess import network_preprocessors

        return network_preprocessors(self.annotator_files())

    def annotator_folder(self, name: str) -> Path | None:
        """The model folder network preprocessor ``name`` runs (a usable depth model), if any."""
        from heyim_desktop.core.control_preprocess import annotator_folder

        return annotator_folder(self.annotator_files(), name)


def resolve_annotators(request: "GenerationRequest", library: ControlNetLibrary) -> "GenerationRequest":
    """The request with each network-preprocessor unit given its model folder from ``library``;
    ModelError (saying what would enable it) when the library has none."""
    from dataclasses import replace

    from heyim_desktop.core.control_preprocess import NETWORK_SPECS, network_hint

    if not any(u.preprocessor in NETWORK_SPECS for u in request.controlnets):
        return request
    units = []
    for i, unit in enumerate(request.controlnets):
        if unit.preprocessor in NETWORK_SPECS:
            folder = library.annotator_folder(unit.preprocessor)
            if folder is None:
                raise ModelError(f"ControlNet {i}: {network_hint(unit.preprocessor)}")
            unit = replace(unit, annotator=str(folder))
        units.append(unit)
    return request.replace(controlnets=tuple(units))


def resolve_controlnet_names(request: "GenerationRequest", library: ControlNetLibrary) -> "GenerationRequest":
    """The request with each unit's ControlNet name replaced by its file in ``library``."""
    from dataclasses import replace

    if not request.controlnets:
        return request
    units = []
    for i, unit in enumerate(request.controlnets):
        found = library.find(unit.model)
        if found is None:
            names = ", ".join(m.name for m in library.ready()) or "none"
            raise ModelError(f"ControlNet {i}: {unit.model!r} is not in the model library (available: {names})")
        units.append(replace(unit, model=found.ref))
    return resolve_annotators(request.replace(controlnets=tuple(units)), library)
