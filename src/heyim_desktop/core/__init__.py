"""The generation core: requests, engines, the denoising loop, images and metadata.

Nothing here imports Qt, and importing this package does not import torch or diffusers:
the heavy modules (``loop``, ``torch_engine``, ``demo_model``) are imported on demand.
"""

from __future__ import annotations

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import (
    ImageError,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    UserFacingError,
)
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress

__all__ = [
    "CancelToken",
    "Cancelled",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "ImageError",
    "InvalidRequest",
    "ModelError",
    "OutOfMemory",
    "Progress",
    "UserFacingError",
]
