"""What a finished job hands back, and what it reports while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from heyim_desktop.core.request import GenerationRequest


@dataclass(frozen=True)
class Progress:
    """One step done. ``preview`` is a small RGB uint8 array, present at most every ~100 ms.

    ``step`` and ``total`` count the steps that really run for the whole job: every image of
    it, and for image-to-image only ``strength`` of the steps. ``image_index`` is the image
    (the first of the batch) being denoised, of ``image_count``.
    """

    step: int
    total: int
    elapsed: float
    image_index: int = 0
    image_count: int = 1
    preview: "npt.NDArray[np.uint8] | None" = field(default=None, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class GeneratedImage:
    image: "Image.Image"
    seed: int
    index: int


@dataclass(frozen=True)
class GenerationResult:
    """Images with the exact request (seed resolved) and per-stage timings in seconds."""

    request: "GenerationRequest"
    images: tuple[GeneratedImage, ...]
    model_name: str
    engine: str
    timings: dict[str, float]
    warnings: tuple[str, ...] = ()
    truncated_prompt: str | None = None
    truncated_negative: str | None = None
    #: Hires fix with ``save_first_pass``: the first pass's images, before upscaling.
    first_pass: tuple[GeneratedImage, ...] = ()
    #: AUTOMATIC1111's short hash of the model's weights (``Model hash:`` in the metadata), when known.
    model_hash: str | None = None
    #: Stopped early by an interrupt: the images are what was made, the last one partial.
    interrupted: bool = False
    #: Engine-specific ``Key: value`` pairs for the ``parameters`` text (a model family's own settings).
    parameters_extra: tuple[tuple[str, str], ...] = ()
