"""Bringing a model file or folder into the app's models folder, safely.

A ``.safetensors`` checkpoint is checked (header, architecture) and copied. A pickle
checkpoint is never opened here: with ``convert=True`` a separate Python process reads it with
``torch.load(weights_only=True)`` and writes ``.safetensors``, which is then checked like any
other. Everything lands under a hidden partial name and is renamed only once complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from heyim_desktop.core.checkpoint import detect_architecture
from heyim_desktop.core.errors import ModelError, StorageError, UserFacingError
from heyim_desktop.core.model_files import FileKind, UnsafeModel, check_regular_file, read_safetensors_header, sniff
from heyim_desktop.core.storage import atomic_write_bytes, disk_full, full_reason, writing
from heyim_desktop.models.inspect import PICKLE_ADVICE, inspect_file, inspect_folder
from heyim_desktop.models.library import app_models_dir
from heyim_desktop.models.types import ModelInfo, ModelStatus

log = logging.getLogger(__name__)
CONVERT_TIMEOUT_S = 1800
#: Where imported LoRAs and embeddings go inside the models folder (AUTOMATIC1111's names).
NETWORK_DIRS = {"lora": "Lora", "embedding": "embeddings"}


class ConversionRefused(ModelError):
    """The restricted loader refused the pickle (it names code, not just tensors)."""


class ModelExists(ModelError):
    """The models folder already holds a model of that name; ``name`` says which."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def _free_space_check(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + 64 * 1024 * 1024:
        raise StorageError(f"Not enough free space in {folder}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free.")


def _target(dest_dir: Path, name: str) -> Path:
    target = dest_dir / name
    if os.path.lexists(target):
        stem = name.removesuffix(".safetensors")
        raise ModelExists(
            f"A model named {stem} already exists in {dest_dir}. Import it under another name "
            f"(`--name NEW_NAME` on the command line), or remove the existing one first.", stem)
    return target


def clean_name(name: str) -> str:
    """A user-given model name as a file or folder name: no folders, no hidden names."""
    cleaned = name.strip().removesuffix(".safetensors").strip()
    if not cleaned or cleaned in (".", "..") or cleaned.startswith(".") or any(c in cleaned for c in '/\\\0:'):
        raise ModelError(f"{name!r} cannot be a model name: use letters, digits, spaces, '-' or '_', no '/' or leading '.'.")
    if len(cleaned.encode("utf-8")) > 200:
        raise ModelError("A model name must be at most 200 bytes long.")
    return cleaned


def target_name(source: str | os.PathLike[str], name: str | None = None) -> str:
    """The file or folder name ``source`` gets in the models folder (``name`` overrides its own)."""
    src = Path(source).expanduser()
    stem = clean_name(name) if name else (src.name if src.is_dir() else src.stem)
    return stem if src.is_dir() else stem + ".safetensors"


def existing_name(source: str | os.PathLike[str], dest_dir: Path | None = None, name: str | None = None) -> str | None:
    """The model name already taken where importing ``source`` would put it, else None.

    That is the models folder for a checkpoint, its ``Lora/`` or ``embeddings/`` folder for a
    LoRA or embedding; a pickle's kind is known only once converted, so all three are checked.
    Files that cannot be read are left to :func:`import_model` to refuse.
    """
    src = Path(source).expanduser()
    dest = dest_dir or app_models_dir()
    wanted = target_name(src, name)
    folders = [dest]
    try:
        if src.is_file():
            kind = sniff(src)
            if kind is FileKind.PICKLE:
                folders += [dest / sub for sub in NETWORK_DIRS.values()]
            elif kind is FileKind.SAFETENSORS:
                network = _network_kind(src)
                if network is not None:
                    folders = [dest / NETWORK_DIRS[network]]
    except (OSError, UserFacingError):
        pass
    taken = any(os.path.lexists(folder / wanted) for folder in folders)
    return wanted.removesuffix(".safetensors") if taken else None


def import_model(source: str | os.PathLike[str], *, convert: bool = False, dest_dir: Path | None = None,
                 name: str | None = None) -> ModelInfo:
    """Copy (and, for pickles with ``convert``, convert) ``source`` into the models folder.

    ``name`` imports it under another name (the default is the file's or folder's own);
    a name already taken raises :class:`ModelExists`. Anything that is not a regular file or
    a folder (a FIFO, a device) is refused before it is opened.
    """
    src = Path(source).expanduser()
    dest = dest_dir or app_models_dir()
    if not src.exists():
        raise ModelError(f"File not found: {src}")
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        return _import_folder(src, dest, target_name(src, name))
    check_regular_file(src)
    kind = sniff(src)
    if kind is FileKind.PICKLE:
        if not convert:
            raise UnsafeModel(f"{src.name} is a {PICKLE_ADVICE}")
        return convert_pickle(src, dest, name=name)
    header = read_safetensors_header(src)  # raises CorruptModel / UnsafeModel
    network = _network_kind(src)
    if network is not None:
        dest = dest / NETWORK_DIRS[network]
        dest.mkdir(parents=True, exist_ok=True)
    else:
        arch = detect_architecture(header, src)
        if not arch.supported:
            raise ModelError(f"{src.name}: {arch.problem}")
    target = _target(dest, target_name(src, name))
    _free_space_check(dest, src.stat().st_size)
    partial = dest / f".{target.name}.partial"
    try:
        with writing(dest, f"the model {target.name}"):
            shutil.copyfile(src, partial)
            read_safetensors_header(partial)  # the copy, not only the source, must be whole
            os.replace(partial, target)
            sidecar = src.with_suffix(".yaml")
            if sidecar.is_file():
                atomic_write_bytes(target.with_suffix(".yaml"), sidecar.read_bytes(), what="the model's config")
    finally:
        partial.unlink(missing_ok=True)
    return _inspect_imported(target, network)


def _network_kind(path: Path) -> str | None:
    """"lora" or "embedding" for such a file (unsupported layouts refused), None for a checkpoint."""
    from heyim_desktop.core.lora import inspect_network_file

    try:
        info = inspect_network_file(path)
    except (UnsafeModel, OSError):
        raise
    except ModelError:
        return None  # not a LoRA or embedding: a checkpoint (or nothing), checked as such
    if not info.supported:
        raise ModelError(f"{path.name} is {info.problem}, so it was not imported.")
    return info.kind


def _inspect_imported(target: Path, network: str | None) -> ModelInfo:
    if network is None:
        return inspect_file(target, "app")
    from heyim_desktop.models.networks import inspect_network

    info = inspect_network(target, "app")
    if info is None:  # the file was checked before the copy; only a vanished file gets here
        raise ModelError(f"{target} could not be read after importing it.")
    return info


def _import_folder(src: Path, dest: Path, folder_name: str) -> ModelInfo:
    info = inspect_folder(src, "user")
    if info is None:
        raise ModelError(f"{src} is not a model folder (no model_index.json, no Core ML resources).")
    if info.status is not ModelStatus.READY:
        raise ModelError(f"{src.name}: {info.problem}")
    target = _target(dest, folder_name)
    _free_space_check(dest, info.size_bytes)
    partial = dest / f".{folder_name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with writing(dest, f"the model {src.name}"):
            _copy_tree(src, partial)
            os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return inspect_folder(target, "app") or info


def _copy_tree(src: Path, dst: Path) -> None:
    """Like shutil.copytree, but the first OSError is raised as is (copytree folds them into text)."""
    dst.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.is_symlink():
            target = item.resolve()
            item = target if target.exists() else item
        if item.is_dir():
            _copy_tree(item, dst / item.name)
        elif item.is_file():
            shutil.copyfile(item, dst / item.name)


def convert_pickle(src: Path, dest: Path, *, name: str | None = None) -> ModelInfo:
    """Convert a pickle checkpoint in a child process; the result is checked before it is kept."""
    check_regular_file(src)  # the child would block forever reading a FIFO
    target = _target(dest, target_name(src, name))
    _free_space_check(dest, src.stat().st_size)
    partial = dest / f".{target.name}.partial"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    src_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src_root, env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "heyim_desktop.models.convert_worker", str(src), str(partial)]
    log.info("converting %s in a separate process", src)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["the converter crashed"])[-1]
            full = full_reason(RuntimeError(proc.stderr[-4000:]))
            if full:
                raise disk_full(dest, f"the converted {target.name}", full)
            raise ConversionRefused(f"{src.name} was not converted ({reason}).")
        header = read_safetensors_header(partial)
        network = _network_kind(partial)
        if network is not None:  # a pickle LoRA or embedding: it goes to its own folder
            folder = dest / NETWORK_DIRS[network]
            folder.mkdir(parents=True, exist_ok=True)
            target = _target(folder, target.name)
        else:
            arch = detect_architecture(header, src)
            if not arch.supported:
                raise ModelError(f"{src.name} converted, but {arch.problem[0].lower()}{arch.problem[1:]}")
        with writing(dest, f"the converted {target.name}"):
            os.replace(partial, target)
    except subprocess.TimeoutExpired:
        raise ConversionRefused(f"{src.name}: conversion took longer than {CONVERT_TIMEOUT_S} s and was stopped.") from None
    finally:
        partial.unlink(missing_ok=True)
    return _inspect_imported(target, network)
