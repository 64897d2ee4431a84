"""Writing PNGs atomically with their generation parameters."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from heyim_desktop.core.errors import StorageError

if TYPE_CHECKING:
    from heyim_desktop.core.result import GenerationResult


def png_bytes_info(parameters: str, settings: dict[str, Any] | None = None) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", parameters)
    if settings is not None:
        info.add_text("heyim", json.dumps(settings, ensure_ascii=False, sort_keys=True))
    return info


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^\w\s-]", "", text, flags=re.UNICODE).strip().lower()
    return re.sub(r"[\s_-]+", "-", words)[:limit].strip("-") or "image"


def write_png_atomic(
    image: Image.Image,
    path: Path,
    parameters: str,
    settings: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``image`` to ``path``: temp file in the same folder, fsync, rename.

    A reader never sees a half-written file. Without ``overwrite`` an existing file is never
    replaced: a numbered suffix is added instead. Returns the final path.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    except OSError as exc:
        raise _storage_error(exc, folder) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=png_bytes_info(parameters, settings), compress_level=4)
            fh.flush()
            os.fsync(fh.fileno())
        final = path if overwrite else _free_name(path)
        os.replace(tmp, final)
        _fsync_dir(folder)
        return final
    except OSError as exc:
        raise _storage_error(exc, folder) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise StorageError(f"Too many files named like {path.name} in {path.parent}.")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _storage_error(exc: OSError, folder: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"The disk is full: cannot save the image in {folder}. Free some space and try again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"No permission to write images in {folder}. Choose another output folder.")
    return StorageError(f"Cannot save the image in {folder}: {exc.strerror or exc}.")


def image_filename(prompt: str, seed: int, when: float | None = None) -> str:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{stamp}-{seed}-{slug(prompt)}.png"


def save_result(result: "GenerationResult", folder: Path) -> list[Path]:
    """Write every image of ``result`` into ``folder`` with its parameters; return the paths."""
    from heyim_desktop.core.metadata import format_parameters

    paths = []
    request = result.request
    if result.first_pass:  # hires fix with save_first_pass: the first pass as the plain txt2img it was
        plain = request.replace(hires=None)
        for item in result.first_pass:
            params = format_parameters(plain, item.seed, result.model_name)
            settings = dict(plain.settings(), seed=item.seed, model_name=result.model_name, engine=result.engine,
                            hires_first_pass=True)
            target = Path(folder) / image_filename(request.prompt + " first pass", item.seed)
            paths.append(write_png_atomic(item.image, target, params, settings))
    for item in result.images:
        params = format_parameters(request, item.seed, result.model_name)
        settings = dict(request.settings(), seed=item.seed, model_name=result.model_name, engine=result.engine)
        target = Path(folder) / image_filename(request.prompt, item.seed)
        paths.append(write_png_atomic(item.image, target, params, settings))
    return paths
