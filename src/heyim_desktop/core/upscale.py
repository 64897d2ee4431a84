"""Enlarging images: super-resolution models (through spandrel), Lanczos and nearest.

Models run tile by tile with an overlap, and the overlapping borders are blended with a linear
ramp, so memory is bounded by the tile size rather than the image. The tile size comes from the
memory this device has free (and the user's preference, if smaller); progress is reported per
tile and a cancel is honoured between tiles.

Model files: ``.safetensors`` are read directly. ``.pth``/``.pt`` files are pickles: they are
converted once, in a separate process with ``torch.load(weights_only=True)``
(:mod:`heyim_desktop.models.convert_worker`), and the converted copy is what gets loaded: no
pickle is ever opened in this process.

Core ML: upscaling always runs on the PyTorch side (CUDA, MPS or CPU); there is no Core ML
upscaler path. No Qt here.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import math
import os
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.core import paths
from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import ImageError, InvalidRequest, ModelError, OutOfMemory
from heyim_desktop.core.model_files import FileKind, UnsafeModel, read_safetensors_header, sniff
from heyim_desktop.core.result import Progress, ProgressCallback

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

LANCZOS = "Lanczos"
NEAREST = "Nearest"
#: Upscalers that need no model file (AUTOMATIC1111's names).
BUILTIN_UPSCALERS = (LANCZOS, NEAREST)
#: AUTOMATIC1111's latent upscale modes for hires fix: name -> (torch interpolate mode, antialias).
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
SCALE_RANGE = (1.0, 8.0)
#: Largest output side an upscale may produce (pixels): a 4x of a 2048 image.
MAX_OUTPUT_SIDE = 8192
TILE_RANGE = (32, 2048)
DEFAULT_OVERLAP = 32
CONVERT_TIMEOUT_S = 600
#: Share of the free memory one tile may use.
MEMORY_SHARE = 0.25

_IMPORT_LOCK = threading.Lock()


def is_latent_mode(name: str | None) -> bool:
    return bool(name) and name in LATENT_MODES


def check_scale(scale: Any, field: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(float(scale)):
        raise InvalidRequest(field, f"must be a number from {SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g}, got {scale!r}")
    value = float(scale)
    if not SCALE_RANGE[0] <= value <= SCALE_RANGE[1]:
        raise InvalidRequest(field, f"must be from {SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g}, got {value:g}")
    return value


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The output size of a ``scale`` upscale, as AUTOMATIC1111 rounds it."""
    w, h = int(round(width * scale)), int(round(height * scale))
    if max(w, h) > MAX_OUTPUT_SIDE:
        raise InvalidRequest("scale", f"{width}x{height} x {scale:g} = {w}x{h} is past the {MAX_OUTPUT_SIDE} pixel limit")
    return w, h


# --- spandrel ------------------------------------------------------------------------------------

def _stand_in_torchvision() -> dict[str, types.ModuleType]:
    """Modules named like torchvision for spandrel's import only.

    spandrel imports torchvision at package import for two architectures that are not upscalers
    (LaMa inpainting, RestoreFormer face restoration). Where torchvision is not installed (it has no
    matching CPU wheel on some machines), these stand-ins let spandrel import; using them fails.
    """

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise ModelError("This model needs torchvision, which is not installed.")

    made: dict[str, types.ModuleType] = {}
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        made[name] = module
    functional = made["torchvision.transforms.functional"]
    functional.rotate = unavailable  # type: ignore[attr-defined]
    functional.normalize = unavailable  # type: ignore[attr-defined]
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear", NEAREST="nearest")  # type: ignore[attr-defined]
    made["torchvision"].transforms = made["torchvision.transforms"]  # type: ignore[attr-defined]
    made["torchvision.transforms"].functional = functional  # type: ignore[attr-defined]
    return made


def import_spandrel() -> Any:
    """spandrel, imported lazily (and without torchvision where it is missing)."""
    with _IMPORT_LOCK:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if importlib.util.find_spec("spandrel") is None:
            raise ModelError(
                "Upscaler models need the spandrel package: pip install 'heyim-desktop[upscale]'. "
                "Lanczos and Nearest work without it."
            )
        if importlib.util.find_spec("torchvision") is not None:
            try:
                import spandrel
            except Exception as exc:  # noqa: BLE001 - a torchvision that does not match this torch fails at import
                raise ModelError(f"The upscaler loader (spandrel) cannot start: {type(exc).__name__}: {exc}. "
                                 "Reinstall torchvision to match torch, or uninstall it.") from None
            return spandrel
        stand_ins = _stand_in_torchvision()
        sys.modules.update(stand_ins)
        try:
            import spandrel
        finally:
            for name in stand_ins:  # nobody else may mistake them for the real package
                sys.modules.pop(name, None)
        return spandrel


# --- model files ---------------------------------------------------------------------------------

def _converted_path(src: Path) -> Path:
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    return paths.cache_dir() / "upscalers" / f"{src.stem}-{key}.safetensors"


def convert_pickle_upscaler(src: Path) -> Path:
    """A safetensors copy of the pickle ``src``, made once in a restricted child process."""
    dest = _converted_path(src)
    if dest.is_file():
        try:
            read_safetensors_header(dest)
            return dest
        except ModelError:
            dest.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    src_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src_root, env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "heyim_desktop.models.convert_worker", str(src), str(partial)]
    log.info("converting the upscaler %s in a separate process", src)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["the converter crashed"])[-1]
            raise UnsafeModel(f"{src.name} was not converted ({reason}).")
        read_safetensors_header(partial)
        os.replace(partial, dest)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{src.name}: conversion took longer than {CONVERT_TIMEOUT_S} s and was stopped.") from None
    except OSError as exc:
        from heyim_desktop.core.errors import StorageError

        raise StorageError(f"Could not write the converted copy of {src.name}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest


@dataclass
class UpscalerModel:
    """A loaded super-resolution model: ``descriptor`` is spandrel's ImageModelDescriptor."""

    name: str
    path: Path
    descriptor: Any
    scale: int
    architecture: str
    #: Widest feature map, for the tile-size estimate.
    width: int

    @property
    def device(self) -> "torch.device":
        return self.descriptor.device  # type: ignore[no-any-return]

    def __call__(self, tile: "torch.Tensor") -> "torch.Tensor":
        return self.descriptor(tile)  # type: ignore[no-any-return]


def _pick_device(device: "torch.device | str | None") -> "torch.device":
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_upscaler(path: str | os.PathLike[str], *, device: "torch.device | str | None" = None,
                  name: str | None = None) -> UpscalerModel:
    """Load a super-resolution model file (architecture detected from its weights)."""
    import torch
    from safetensors.torch import load_file

    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelError(f"Upscaler model not found: {src}")
    kind = sniff(src)
    if kind is FileKind.PICKLE:
        weights = convert_pickle_upscaler(src)
    elif kind is FileKind.SAFETENSORS:
        weights = src
    else:
        raise ModelError(f"{src.name} is not a model file HeyIm reads (.safetensors, or a .pth to convert).")
    read_safetensors_header(weights)
    spandrel = import_spandrel()
    state = load_file(str(weights), device="cpu")
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ModelError(f"{src.name}: not an upscaler architecture HeyIm knows (ESRGAN, SwinIR, HAT, DAT, SPAN, ...).") from None
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{src.name}: the weights do not fit their architecture ({exc}).") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR" or descriptor.scale < 1:
        raise ModelError(f"{src.name} is a {descriptor.architecture.name} model, not an upscaler.")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(f"{src.name} works on {descriptor.input_channels}-channel images; HeyIm upscales RGB only.")
    dev = _pick_device(device)
    dtype = torch.float16 if dev.type == "cuda" and descriptor.supports_half else torch.float32
    descriptor.to(dev).eval()
    if dtype != torch.float32:
        descriptor.to(dtype)
    widest = max((int(t.shape[0]) for t in state.values() if t.ndim == 4), default=64)
    return UpscalerModel(name or src.stem, src, descriptor, int(descriptor.scale), descriptor.architecture.name, widest)


# --- tiling --------------------------------------------------------------------------------------

def free_memory_bytes(device: "torch.device") -> int:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def auto_tile_size(model: UpscalerModel, *, preference: int | None = None, free_bytes: int | None = None) -> int:
    """The largest tile (input pixels per side) whose activations fit a share of free memory."""
    free = free_memory_bytes(model.device) if free_bytes is None else free_bytes
    itemsize = 2 if str(getattr(model.descriptor, "dtype", "")).endswith("float16") else 4
    # Dense blocks keep several feature maps alive; the upsampled stages cost scale^2 more.
    per_pixel = itemsize * model.width * (8 + 2 * model.scale * model.scale)
    side = int(math.sqrt(max(1, free * MEMORY_SHARE) / per_pixel))
    side = max(TILE_RANGE[0], min(TILE_RANGE[1], side))
    if preference:
        side = min(side, max(TILE_RANGE[0], int(preference)))
    return side - side % 8 if side >= 64 else side


def _ramp(length: int, lead: int, trail: int) -> "torch.Tensor":
    """Weights along one tile axis: 1 inside, rising linearly across overlaps shared with a neighbour."""
    import torch

    w = torch.ones(length, dtype=torch.float32)
    if lead:
        w[:lead] = (torch.arange(lead, dtype=torch.float32) + 1) / (lead + 1)
    if trail:
        w[length - trail:] = torch.minimum(w[length - trail:], (torch.arange(trail, 0, -1, dtype=torch.float32)) / (trail + 1))
    return w


def _spans(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, length, overlap with the previous, overlap with the next) of the tiles along one axis.

    As few tiles as ``tile`` allows with at least ``overlap`` between neighbours, then shrunk and
    spread evenly: a 512 side in 256 tiles is three tiles of 192, not 256 + 256 + a redundant one.
    """
    if size <= tile:
        return [(0, size, 0, 0)]
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)
    length = min(tile, length + (-length % 8))  # whole multiples of 8 where the tile allows
    starts = [round(i * (size - length) / (n - 1)) for i in range(n)]
    spans = []
    for i, start in enumerate(starts):
        lead = starts[i - 1] + length - start if i > 0 else 0
        trail = start + length - starts[i + 1] if i < n - 1 else 0
        spans.append((start, length, lead, trail))
    return spans


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the tiles covering an image, row by row."""
    return [(y, x, h, w) for y, h, _, _ in _spans(height, tile, overlap) for x, w, _, _ in _spans(width, tile, overlap)]


def upscale_tensor(
    model: Callable[["torch.Tensor"], "torch.Tensor"],
    image: "torch.Tensor",
    scale: int,
    *,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> "torch.Tensor":
    """Run ``model`` over ``image`` (1, 3, H, W) in [0, 1] tile by tile; the result stays on the CPU.

    Tiles overlap by ``overlap`` input pixels; where two tiles overlap, each output pixel is the
    ramp-weighted mean of both, so no seam shows. Only one tile's activations exist at a time.
    """
    import torch

    cancel = cancel or CancelToken()
    _, channels, height, width = image.shape
    tile = max(8, int(tile))
    overlap = max(0, min(int(overlap), tile // 2))
    rows, cols = _spans(height, tile, overlap), _spans(width, tile, overlap)
    grid = [(r, c) for r in rows for c in cols]
    out = torch.zeros((channels, height * scale, width * scale), dtype=torch.float32)
    weight = torch.zeros((1, height * scale, width * scale), dtype=torch.float32)
    device = getattr(model, "device", image.device)
    dtype = getattr(getattr(model, "descriptor", None), "dtype", image.dtype)
    t_start = time.perf_counter()
    for done, ((y, th, lead_y, trail_y), (x, tw, lead_x, trail_x)) in enumerate(grid, start=1):
        cancel.raise_if_cancelled()
        piece = image[:, :, y:y + th, x:x + tw].to(device=device, dtype=dtype)
        with torch.inference_mode():
            result = model(piece)
        result = result[0].float().cpu()
        if result.shape[-2:] != (th * scale, tw * scale):
            raise ModelError(f"The upscaler returned {tuple(result.shape[-2:])} for a {th}x{tw} tile at scale {scale}.")
        # Ramp across the whole overlap, only on sides that another tile overlaps.
        wy = _ramp(th * scale, lead_y * scale, trail_y * scale)
        wx = _ramp(tw * scale, lead_x * scale, trail_x * scale)
        mask = (wy[:, None] * wx[None, :])[None]
        oy, ox = y * scale, x * scale
        out[:, oy:oy + th * scale, ox:ox + tw * scale] += result * mask
        weight[:, oy:oy + th * scale, ox:ox + tw * scale] += mask
        del result
        if progress is not None:
            progress(Progress(done, len(grid), time.perf_counter() - t_start))
    cancel.raise_if_cancelled()
    return out.div_(weight.clamp_min_(1e-8)).unsqueeze(0)  # in place: the output is the big allocation


# --- images --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpscaleOutcome:
    image: "Image.Image"
    upscaler: str
    scale: float
    tiles: int
    seconds: float


def resize_builtin(image: "Image.Image", size: tuple[int, int], upscaler: str) -> "Image.Image":
    from PIL import Image

    method = {LANCZOS: Image.Resampling.LANCZOS, NEAREST: Image.Resampling.NEAREST}.get(upscaler)
    if method is None:
        raise InvalidRequest("upscaler", f"{upscaler!r} is not a built-in upscaler ({', '.join(BUILTIN_UPSCALERS)})")
    return image.convert("RGB").resize(size, method)


def upscale_image(
    image: "Image.Image",
    *,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    upscaler: str = LANCZOS,
    model: UpscalerModel | None = None,
    tile: int | None = None,
    tile_preference: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> UpscaleOutcome:
    """Enlarge ``image`` by ``scale`` (or to ``size``) with a built-in upscaler or ``model``.

    A model runs at its own scale (repeatedly, if that is not enough) and the result is resized
    with Lanczos to the exact target, as AUTOMATIC1111 does.
    """
    import numpy as np
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    rgb = image.convert("RGB")
    if size is None:
        if scale is None:
            raise InvalidRequest("scale", "give a scale or a target size")
        size = target_size(rgb.width, rgb.height, check_scale(scale))
    else:
        for label, value in zip(("width", "height"), size):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_SIDE:
                raise InvalidRequest(label, f"must be a whole number from 1 to {MAX_OUTPUT_SIDE}, got {value!r}")
    factor = max(size[0] / rgb.width, size[1] / rgb.height)
    if model is None:
        out = resize_builtin(rgb, size, upscaler)
        return UpscaleOutcome(out, upscaler, factor, 0, time.perf_counter() - t0)
    tiles = 0
    current = rgb
    try:
        while current.width < size[0] or current.height < size[1]:
            if max(current.width, current.height) * model.scale > MAX_OUTPUT_SIDE and tiles:
                break  # another model pass would pass the limit: Lanczos does the rest
            pixels = torch.from_numpy(np.asarray(current, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
            side = tile or auto_tile_size(model, preference=tile_preference)
            counted: list[int] = []

            def report(p: Progress, counted: list[int] = counted) -> None:
                counted.append(p.step)
                if progress is not None:
                    progress(p)

            result = upscale_tensor(model, pixels, model.scale, tile=side, overlap=overlap, progress=report, cancel=cancel)
            tiles += len(counted)
            arr = result[0].clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            del result
            current = Image.fromarray(arr, "RGB")
            if model.scale <= 1:
                break
    except torch.OutOfMemoryError:
        raise OutOfMemory("Out of memory while upscaling; choose a smaller tile size in Preferences.") from None
    if current.size != size:
        current = current.resize(size, Image.Resampling.LANCZOS)
    return UpscaleOutcome(current, model.name, factor, tiles, time.perf_counter() - t0)


def check_image_for_upscale(image: "Image.Image") -> None:
    if image.width < 1 or image.height < 1:
        raise ImageError("The image is empty.")
