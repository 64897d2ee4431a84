"""Writing PNGs atomically with their generation parameters."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from heyim_desktop.core.storage import fsync_dir, new_temp_file, place_exclusively, writing

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


#: Where unfinished PNGs are written, inside the folder they are saved to: a folder only HeyIm uses.
TEMP_FOLDER = ".heyim-partial"


def write_png_atomic(
    image: Image.Image,
    path: Path,
    parameters: str,
    settings: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    temp_dir: Path | None = None,
) -> Path:
    """Write ``image`` to ``path``: temp file in HeyIm's own temp folder, fsync, then its final name.

    A reader never sees a half-written file. Without ``overwrite`` an existing file is never
    replaced, not even by another process saving the same name at the same moment: the name is
    taken exclusively, with a numbered suffix when it is already used. The file's permissions
    follow the umask. Returns the final path.
    """
    path = Path(path)
    folder = path.parent
    tmp_folder = temp_dir or folder / TEMP_FOLDER
    tmp: Path | None = None
    try:
        with writing(folder, "the image"):
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = new_temp_file(tmp_folder, ".png")
            with os.fdopen(fd, "wb") as fh:
                image.save(fh, format="PNG", pnginfo=png_bytes_info(parameters, settings), compress_level=4)
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, path)
                final = path
            else:
                final = place_exclusively(tmp, path)
            fsync_dir(folder)
            return final
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            tmp_folder.rmdir()  # only succeeds when empty: another writer's file keeps it


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
        params = format_parameters(request, item.seed, result.model_name, model_hash=result.model_hash,
                                   extra=dict(result.parameters_extra))
        settings = dict(request.settings(), seed=item.seed, model_name=result.model_name, engine=result.engine)
        target = Path(folder) / image_filename(request.prompt, item.seed)
        paths.append(write_png_atomic(item.image, target, params, settings))
    return paths
