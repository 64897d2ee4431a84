"""LoRAs and textual-inversion embeddings in the model library.

They live in the folders a user already has: AUTOMATIC1111's ``models/Lora`` (and
``LyCORIS``) and ``embeddings``, ComfyUI's ``models/loras`` and ``models/embeddings``, or any
folder added in Preferences (searched a few levels deep, as LoRA collections nest). A LoRA is
named by its file name without the extension, as ``<lora:NAME:WEIGHT>`` calls it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.lora import NetworkFinder, inspect_network_file
from heyim_desktop.core.model_files import CorruptModel, FileKind, UnsafeModel, file_size, sniff
from heyim_desktop.models.types import ModelInfo, ModelStatus

if TYPE_CHECKING:
    from heyim_desktop.models.library import ModelLibrary

log = logging.getLogger(__name__)

NETWORK_KINDS = ("lora", "embedding")
#: Folder names (any case) that hold LoRAs or embeddings in AUTOMATIC1111, ComfyUI, InvokeAI.
NETWORK_FOLDERS = frozenset({"lora", "loras", "lycoris", "embeddings", "textual_inversion", "embedding"})
MAX_DEPTH = 4
#: A family LoRA's base is the family's label, as its model folders show it ("Z-Image").
_BASES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "zimage": "Z-Image", "flux2": "FLUX.2 [klein]", "sd3": "SD 3.5",
          "unknown": "unknown"}


def inspect_network(path: Path, source: str = "") -> ModelInfo | None:
    """A LoRA or embedding file as the library lists it, or None when the file is neither."""
    try:
        kind = sniff(path)
        size = file_size(path)
    except OSError:
        return None
    if kind is FileKind.PICKLE and path.suffix.lower() in (".pt", ".ckpt", ".bin"):
        return ModelInfo(path.stem, str(path), "lora", "unknown", size, ModelStatus.UNSAFE,
                         "a pickle file: convert it with `heyim-desktop models import FILE --convert`", source)
    if kind is not FileKind.SAFETENSORS:
        return None
    try:
        info = inspect_network_file(path)
    except (UnsafeModel, CorruptModel) as exc:
        return ModelInfo(path.stem, str(path), "lora", "unknown", size, ModelStatus.CORRUPT, str(exc), source)
    except ModelError:
        return None
    status = ModelStatus.READY if info.supported else ModelStatus.UNSUPPORTED
    problem = info.problem
    return ModelInfo(path.stem, str(path), info.kind, _BASES.get(info.family, "unknown"), size, status, problem, source)


def _walk(folder: Path, depth: int) -> Iterator[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        log.warning("cannot read %s: %s", folder, exc)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and depth > 0:
            yield from _walk(entry, depth - 1)
        elif entry.is_file() and entry.suffix.lower() in (".safetensors", ".pt", ".ckpt", ".bin"):
            yield entry


def _network_folders(root: Path) -> Iterator[Path]:
    """The LoRA and embedding folders in or under ``root`` (``root/models/Lora`` too)."""
    if root.name.lower() in NETWORK_FOLDERS:
        yield root
    for level in (root, root / "models"):
        try:
            children = list(level.iterdir()) if level.is_dir() else []
        except OSError:
            continue
        for child in children:
            if child.is_dir() and child.name.lower() in NETWORK_FOLDERS:
                yield child


class NetworkLibrary:
    """The LoRAs and embeddings found under the model library's folders."""

    def __init__(self, library: "ModelLibrary") -> None:
        self.library = library

    def all(self) -> list[ModelInfo]:
        found: dict[str, ModelInfo] = {}
        for root, source in self.library.roots():
            if not root.is_dir():
                continue
            for folder in _network_folders(root):
                for path in _walk(folder, MAX_DEPTH):
                    info = inspect_network(path, source)
                    if info is not None:
                        found.setdefault(str(path.resolve()), info)
            # LoRA files dropped straight into a models folder count too.
            try:
                loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".safetensors"]
            except OSError:
                loose = []
            for path in loose:
                info = inspect_network(path, source)
                if info is not None:
                    found.setdefault(str(path.resolve()), info)
        return sorted(found.values(), key=lambda m: (m.kind, m.name.lower()))

    def loras(self) -> list[ModelInfo]:
        return [m for m in self.all() if m.kind == "lora"]

    def find_lora(self, name: str) -> Path | None:
        """By file stem (as ``<lora:NAME>``), case-insensitively when unique; a path works too."""
        direct = Path(name).expanduser()
        if direct.suffix.lower() == ".safetensors" and direct.is_file():
            return direct
        loras = [m for m in self.loras() if m.ready]
        exact = [m for m in loras if m.name == name]
        folded = exact or [m for m in loras if m.name.lower() == name.lower()]
        return Path(folded[0].ref) if len(folded) >= 1 else None

    def embeddings(self) -> dict[str, Path]:
        return {m.name: Path(m.ref) for m in self.all() if m.kind == "embedding" and m.ready}

    def lora_files(self) -> dict[str, Path]:
        """Usable LoRAs by name (the first of equal names, as find_lora picks)."""
        out: dict[str, Path] = {}
        for m in self.loras():
            if m.ready:
                out.setdefault(m.name, Path(m.ref))
        return out

    def finder(self) -> NetworkFinder:
        return NetworkFinder(self.find_lora, self.embeddings, self.lora_files)
