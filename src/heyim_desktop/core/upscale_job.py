"""An upscale as a queue job: it runs on the same worker as generations, with progress and cancel.

It needs no generation model: the host runs it without loading (or unloading) one. The result
carries the source's parameters so the saved image records where it came from, with the keys
AUTOMATIC1111's Extras tab adds (``Postprocess upscale by``, ``Postprocess upscaler``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.result import GeneratedImage, ProgressCallback
from heyim_desktop.core.upscale import BUILTIN_UPSCALERS, check_scale, target_size, upscale_image

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class UpscaleRequest:
    """Enlarge ``image`` by ``scale`` (or to ``size``) with ``upscaler``.

    ``upscaler`` is "Lanczos", "Nearest" or a model's name with its file in ``upscaler_path``
    (filled by the app from the model library, never taken from outside data).
    ``source_entry`` is the history entry the image came from, if any.
    """

    image: "Image.Image" = field(compare=False, repr=False)
    scale: float = 2.0
    upscaler: str = "Lanczos"
    upscaler_path: str | None = None
    size: tuple[int, int] | None = None
    tile_preference: int | None = None
    source_entry: int | None = None
    source_parameters: str = ""
    source_settings: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Upscale jobs load no generation model; the queue and its views read these like a request's.
    model: None = None
    count: int = 1
    steps: int = 0
    seed: int | None = None
    hires: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_scale(self.scale))
        if not isinstance(self.upscaler, str) or not self.upscaler:
            raise InvalidRequest("upscaler", "must name an upscaler")
        if self.upscaler not in BUILTIN_UPSCALERS and not self.upscaler_path:
            raise InvalidRequest("upscaler", f"no upscaler named {self.upscaler!r}")
        if self.size is None:
            target_size(self.image.width, self.image.height, self.scale)
        if self.seed is None and isinstance(self.source_settings.get("seed"), int):
            object.__setattr__(self, "seed", self.source_settings["seed"])

    @property
    def kind(self) -> str:
        return "upscale"

    @property
    def is_img2img(self) -> bool:
        return False

    @property
    def prompt(self) -> str:
        return str(self.source_settings.get("prompt") or f"Upscale {self.upscaler}")

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size or target_size(self.image.width, self.image.height, self.scale)

    @property
    def width(self) -> int:
        return self.output_size[0]

    @property
    def height(self) -> int:
        return self.output_size[1]

    @property
    def effective_scale(self) -> float:
        if self.size is None:
            return self.scale
        return round(max(self.size[0] / self.image.width, self.size[1] / self.image.height), 4)


@dataclass(frozen=True)
class UpscaleResult:
    """The upscaled image; shaped like a GenerationResult where views read one."""

    request: UpscaleRequest
    images: tuple[GeneratedImage, ...]
    model_name: str
    timings: dict[str, float]
    tiles: int = 0
    engine: str = "upscale"
    warnings: tuple[str, ...] = ()
    first_pass: tuple[GeneratedImage, ...] = ()
    truncated_prompt: str | None = None
    truncated_negative: str | None = None
    interrupted: bool = False


def upscale_to_data(request: UpscaleRequest) -> dict[str, Any]:
    """What the engine process needs to run ``request``, as plain data (the image goes beside it).

    ``upscaler_path`` is included: it was filled by the app from its model library, and the
    engine process is the app's own. The source's parameters stay with the parent, which
    keeps its request object for the result.
    """
    return {"scale": request.scale, "upscaler": request.upscaler, "upscaler_path": request.upscaler_path,
            "size": list(request.size) if request.size is not None else None,
            "tile_preference": request.tile_preference, "seed": request.seed}


def upscale_from_data(data: dict[str, Any], image: "Image.Image") -> UpscaleRequest:
    """The engine process's side of :func:`upscale_to_data` (validated again as it is built)."""
    size = data.get("size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in size)):
            raise InvalidRequest("size", f"must be [width, height], got {size!r}")
        size = (size[0], size[1])
    path, tile, seed = data.get("upscaler_path"), data.get("tile_preference"), data.get("seed")
    return UpscaleRequest(image=image, scale=data.get("scale", 2.0), upscaler=str(data.get("upscaler") or ""),
                          upscaler_path=str(path) if isinstance(path, str) and path else None, size=size,
                          tile_preference=tile if isinstance(tile, int) and not isinstance(tile, bool) else None,
                          seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None)


def run_upscale_job(request: UpscaleRequest, *, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None, device: str = "auto") -> UpscaleResult:
    from heyim_desktop.core.pipeline import UPSCALERS
    from heyim_desktop.core.torch_engine import pick_device

    t0 = time.perf_counter()
    model = UPSCALERS.get(request.upscaler_path, pick_device(device)) if request.upscaler_path else None
    outcome = upscale_image(request.image, scale=None if request.size else request.scale, size=request.size,
                            upscaler=request.upscaler, model=model, tile_preference=request.tile_preference,
                            progress=progress, cancel=cancel)
    item = GeneratedImage(image=outcome.image, seed=request.seed or 0, index=0)
    return UpscaleResult(request, (item,), request.upscaler, {"upscale": outcome.seconds, "total": time.perf_counter() - t0},
                         tiles=outcome.tiles)
