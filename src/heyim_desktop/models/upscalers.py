"""Upscaler models in the library: the folders other apps keep them in, their scale, by name.

Found in, under every library root (the app's models folder, the repo's, the user's folders):
``upscalers/`` (HeyIm's own and its downloads), AUTOMATIC1111's ``ESRGAN/`` and ``RealESRGAN/``
and ComfyUI's ``upscale_models/`` (directly or below a ``models/`` folder, so adding the webui's
or ComfyUI's own folder works), and a root that is itself one of those folders. Listing reads
names and safetensors headers only; ``.pth`` files are listed and converted (out of process) on
first use by :func:`heyim_desktop.core.upscale.load_upscaler`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from heyim_desktop.core.model_files import (
    CorruptModel, FileKind, SafetensorsHeader, UnsafeModel, is_checkpoint_candidate, read_safetensors_header, sniff,
)
from heyim_desktop.core.upscale import BUILTIN_UPSCALERS, LATENT_MODES
from heyim_desktop.models.types import ModelInfo, ModelStatus

if TYPE_CHECKING:
    from heyim_desktop.models.library import ModelLibrary

log = logging.getLogger(__name__)

#: Folder names that hold upscaler models (HeyIm, AUTOMATIC1111, ComfyUI).
UPSCALER_FOLDERS = ("upscalers", "ESRGAN", "RealESRGAN", "upscale_models")
APP_FOLDER = "upscalers"
KIND = "upscaler"
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:x([1-8])|([1-8])x)(?![0-9])", re.IGNORECASE)


def upscaler_folders(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        candidates = [root] if root.name in UPSCALER_FOLDERS else []
        candidates += [root / name for name in UPSCALER_FOLDERS]
        candidates += [root / "models" / name for name in UPSCALER_FOLDERS]
        for folder in candidates:
            if folder.is_dir() and folder not in found:
                found.append(folder)
    return found


def scale_from_name(name: str) -> int:
    match = _SCALE_IN_NAME.search(name)
    if not match:
        return 0
    return int(match.group(1) or match.group(2))


def scale_from_header(header: SafetensorsHeader) -> int:
    """The scale of the common ESRGAN layouts from tensor shapes alone (0 when unsure)."""
    names = set(header.tensors)
    first = header.shape("conv_first.weight") or header.shape("model.0.weight")
    if "conv_first.weight" in names and ("conv_up1.weight" in names or "upconv1.weight" in names):
        # Real-ESRGAN (new layout): x4 has two up-convs; x2/x1 use pixel-unshuffle (12/48 input channels).
        if first and len(first) == 4:
            if first[1] == 12:
                return 2
            if first[1] == 48:
                return 1
        return 4 if ("conv_up2.weight" in names or "upconv2.weight" in names) else 2
    if "model.0.weight" in names:  # old ESRGAN: one upconv per 2x, at model.3, model.6, ...
        ups = [k for k in names if re.fullmatch(r"model\.\d+\.weight", k) and k not in ("model.0.weight",)]
        ups = [k for k in ups if int(k.split(".")[1]) > 1 and (header.shape(k) or (0,))[0] == (first or (0,))[0]]
        if ups:
            return int(2 ** max(1, len(ups) - 1))
    return 0


def inspect_upscaler(path: Path, source: str = "") -> ModelInfo:
    size = path.stat().st_size
    name = path.stem
    scale = scale_from_name(name)
    try:
        kind = sniff(path)
    except OSError as exc:
        return ModelInfo(name, str(path), KIND, "upscaler", size, ModelStatus.CORRUPT, f"unreadable: {exc}", source, scale)
    if kind is FileKind.PICKLE:
        return ModelInfo(name, str(path), KIND, "upscaler", size, ModelStatus.READY,
                         "pickle: converted to safetensors in a restricted process on first use", source, scale)
    try:
        header = read_safetensors_header(path)
    except (CorruptModel, UnsafeModel) as exc:
        return ModelInfo(name, str(path), KIND, "upscaler", size, ModelStatus.CORRUPT, str(exc), source, scale)
    return ModelInfo(name, str(path), KIND, "upscaler", size, ModelStatus.READY, "", source,
                     scale or scale_from_header(header))


def scan_upscalers(roots: Iterable[Path], source_of: dict[Path, str] | None = None) -> list[ModelInfo]:
    """Every upscaler file in the known folders (one level of subfolders: downloads live in one)."""
    found: dict[str, ModelInfo] = {}
    for folder in upscaler_folders(roots):
        source = (source_of or {}).get(folder, "user")
        try:
            entries = sorted(folder.iterdir())
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                files = sorted(entry.iterdir()) if entry.is_dir() else [entry]
                for file in files:
                    if not is_checkpoint_candidate(file):
                        continue
                    if file.suffix.lower() != ".safetensors" and file.with_suffix(".safetensors").is_file():
                        continue  # the same model already converted: the safetensors copy is the one listed
                    found.setdefault(str(file.resolve()), inspect_upscaler(file, source))
        except OSError as exc:
            log.warning("cannot read %s: %s", folder, exc)
    return sorted(found.values(), key=lambda m: (not m.ready, m.name.lower()))


def upscaler_names(library: "ModelLibrary") -> list[str]:
    """What a user may pick: the built-ins, then every ready model (AUTOMATIC1111's order)."""
    return list(BUILTIN_UPSCALERS) + [m.name for m in library.list_upscalers() if m.ready]


def hires_upscaler_names(library: "ModelLibrary") -> list[str]:
    return list(LATENT_MODES) + upscaler_names(library)


def find_upscaler(library: "ModelLibrary", name: str) -> ModelInfo | None:
    """A model upscaler by name (case-insensitive) or path; None for unknown names."""
    models = library.list_upscalers()
    for info in models:
        if name in (info.name, info.ref):
            return info
    folded = [m for m in models if m.name.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def resolve_upscaler(library: "ModelLibrary", name: str, *, latent: bool = False) -> tuple[str, str | None]:
    """(the upscaler's own name, its model file or None) for a name a user typed.

    Built-ins (and, with ``latent``, the latent modes) match case-insensitively; anything else
    must be a ready upscaler model in the library. Unknown names are an InvalidRequest that
    lists the choices.
    """
    from heyim_desktop.core.errors import InvalidRequest

    builtins_ = list(LATENT_MODES) + list(BUILTIN_UPSCALERS) if latent else list(BUILTIN_UPSCALERS)
    for known in builtins_:
        if name.lower() == known.lower():
            return known, None
    info = find_upscaler(library, name)
    if info is not None and info.ready:
        return info.name, info.ref
    choices = hires_upscaler_names(library) if latent else upscaler_names(library)
    field = "hires_upscaler" if latent else "upscaler"
    raise InvalidRequest(field, f"no upscaler named {name!r}; choose one of: {', '.join(choices)}")


def resolve_hires(library: "ModelLibrary", hires: Any) -> Any:
    """``hires`` (a HiresFix) with its upscaler's name made canonical and its model file filled in."""
    from dataclasses import replace

    name, path = resolve_upscaler(library, hires.upscaler, latent=True)
    return replace(hires, upscaler=name, upscaler_path=path)
