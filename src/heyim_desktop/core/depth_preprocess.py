"""Depth maps from a depth-estimation network in the model library's annotator folder.

The network is a transformers folder (``config.json``, ``model.safetensors`` and the image
processor's ``preprocessor_config.json``): a DPT model such as Intel/dpt-hybrid-midas for
``depth_midas`` or a Depth Anything model for ``depth_anything_v2``. Only safetensors weights
are read, from local files only. The map is the predicted depth at the detector's resolution
(bicubic, as transformers' depth pipeline brings it to the image size), min-max normalised to
0..255 as the ControlNet extension does, grey in three channels.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: transformers' ``model_type`` each depth preprocessor accepts.
DEPTH_MODEL_TYPES: dict[str, frozenset[str]] = {
    "depth_midas": frozenset({"dpt"}),
    "depth_anything_v2": frozenset({"depth_anything"}),
}
WEIGHTS = "model.safetensors"
PROCESSOR_CONFIG = "preprocessor_config.json"
_PICKLES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")

_lock = threading.Lock()
_cache: dict[tuple[str, float, str], tuple[Any, Any]] = {}


def model_type(folder: Path) -> str | None:
    """The folder's transformers ``model_type``, or None when it has no readable config."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check_folder(folder: Path, name: str) -> None:
    """Raise ModelError unless ``folder`` is a loadable, safetensors-only model for ``name``."""
    kind = model_type(folder)
    wanted = DEPTH_MODEL_TYPES[name]
    if kind not in wanted:
        raise ModelError(f"{folder}: not a {' or '.join(sorted(wanted))} depth model (config.json says {kind!r})")
    if not (folder / WEIGHTS).is_file():
        pickled = [p for p in _PICKLES if (folder / p).is_file()]
        why = f" ({pickled[0]} is a pickle, which HeyIm never loads)" if pickled else ""
        raise ModelError(f"{folder}: {WEIGHTS} is missing{why}; use the safetensors weights")
    if not (folder / PROCESSOR_CONFIG).is_file():
        raise ModelError(f"{folder}: {PROCESSOR_CONFIG} (the image processor's settings) is missing")


def usable(folder: Path, name: str) -> bool:
    try:
        check_folder(folder, name)
    except ModelError:
        return False
    return True


def _load(folder: Path, name: str, device: str) -> tuple[Any, Any]:
    check_folder(folder, name)
    key = (str(folder.resolve()), (folder / WEIGHTS).stat().st_mtime, device)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            return found
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)  # type: ignore[no-untyped-call]
            model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{folder}: cannot load the depth model ({exc})") from exc
        model = model.to(device).eval()
        while len(_cache) >= 2:  # a preview's CPU copy and the engine's, no more: they are large
            _cache.pop(next(iter(_cache)))
        _cache[key] = (processor, model)
        log.info("loaded depth model %s on %s", folder, device)
        return processor, model


def depth_map(image: "Image.Image", folder: Path, name: str, device: str = "cpu") -> "Image.Image":
    """The grey (RGB) depth map of ``image`` (RGB) at its own size."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    if name not in DEPTH_MODEL_TYPES:
        raise InvalidRequest("controlnet.module", f"{name!r} is not a depth preprocessor")
    processor, model = _load(folder, name, device)
    inputs = processor(images=image, return_tensors="pt")
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    with torch.inference_mode():
        outputs = model(**inputs)
    post = processor.post_process_depth_estimation(outputs, target_sizes=[(image.height, image.width)])
    depth = post[0]["predicted_depth"].float().cpu().numpy()
    low, high = float(depth.min()), float(depth.max())
    span = high - low
    scaled = (depth - low) / span if span > 0 else np.zeros_like(depth)
    grey = (scaled * 255).astype(np.uint8)
    return PILImage.fromarray(np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)), mode="RGB")
