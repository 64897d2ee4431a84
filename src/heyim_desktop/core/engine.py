"""Engines: a model loaded on a device, turning requests into results.

An engine is its :class:`Components` plus the shared loop; this module holds what every
engine does the same way (seed resolution, out-of-memory mapping, Pillow conversion).
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import OutOfMemory
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, ProgressCallback

if TYPE_CHECKING:
    # numpy and Pillow load with the first result, not when the app starts (launch time).
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from heyim_desktop.core.components import Components

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str
    model_name: str

    @property
    def default_size(self) -> tuple[int, int]: ...

    @property
    def fixed_size(self) -> tuple[int, int] | None: ...

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult: ...

    def close(self) -> None: ...


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "cannot allocate memory" in text


def floats_to_pil(images: npt.NDArray[np.float32]) -> list[Image.Image]:
    """(N, H, W, 3) floats in [0, 1] -> Pillow images (rounded like diffusers)."""
    import numpy as np
    from PIL import Image

    arr = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(a, mode="RGB") for a in arr]


class PipelineEngine:
    """The shared engine: components from any backend, driven by :func:`run_loop`."""

    def __init__(self, components: "Components", *, name: str, model_name: str, default_size: tuple[int, int]) -> None:
        self.components: Components | None = components
        self.name = name
        self.model_name = model_name
        self._default_size = default_size
        self._counter: Any = None
        self._counter_lock = threading.Lock()

    @property
    def default_size(self) -> tuple[int, int]:
        return self.fixed_size or self._default_size

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self.components.fixed_size if self.components is not None else None

    @property
    def supports_img2img(self) -> bool:
        return bool(self.components and self.components.supports_img2img)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` by the model's tokenizer (start and end markers included), or None.

        Safe from any thread while a job runs: the count uses a private copy of the tokenizer
        (fast tokenizers must not be shared between threads).
        """
        with self._counter_lock:
            if self._counter is None:
                tokenizer = getattr(self.components, "tokenizer", None)
                if tokenizer is None:
                    return None
                import copy

                try:
                    self._counter = copy.deepcopy(tokenizer)
                except Exception:  # noqa: BLE001 - the window falls back to an estimate
                    log.info("cannot copy the tokenizer for the token counter", exc_info=True)
                    return None
            try:
                return len(self._counter(text, truncation=False)["input_ids"])
            except Exception:  # noqa: BLE001 - a tokenizer quirk must not break typing
                log.debug("token count failed", exc_info=True)
                return None

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        from heyim_desktop.core.loop import run_loop

        if self.components is None:
            raise RuntimeError("engine is closed")
        request = request.with_seed()
        try:
            out = run_loop(self.components, request, progress=progress, cancel=cancel)
        except Exception as exc:
            if _is_oom(exc):
                gc.collect()
                _empty_device_cache()
                raise OutOfMemory(
                    f"Out of memory on {self.components.device} for {request.width}x{request.height} "
                    f"x{request.count}. Try a smaller size or fewer images."
                ) from exc
            raise
        pil = floats_to_pil(out.images)
        images = tuple(GeneratedImage(image=img, seed=seed, index=i) for i, (img, seed) in enumerate(zip(pil, out.seeds)))
        log.info(
            "generated %d image(s) %dx%d in %.2fs (%s, %s)",
            len(images), request.width, request.height, out.timings.get("total", 0.0), self.name, self.model_name,
        )
        return GenerationResult(
            request=request,
            images=images,
            model_name=self.model_name,
            engine=self.name,
            timings=out.timings,
            warnings=tuple(out.warnings),
            truncated_prompt=out.truncated_prompt,
            truncated_negative=out.truncated_negative,
        )

    def close(self) -> None:
        """Release the model's memory (CPU and device) before another one loads."""
        if self.components is not None:
            self.components.release()
            self.components = None
        with self._counter_lock:
            self._counter = None
        gc.collect()
        _empty_device_cache()


def _empty_device_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()
