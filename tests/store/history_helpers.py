"""Shared by the history tests."""

from __future__ import annotations

from PIL import Image

from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult


def make_result(prompt: str = "a red fox", count: int = 1, seed: int = 1, **kw: object) -> GenerationResult:
    req = GenerationRequest(prompt=prompt, seed=seed, count=count, width=64, height=64, **kw)  # type: ignore[arg-type]
    images = tuple(GeneratedImage(Image.new("RGB", (64, 64), (i * 50 % 255, 90, 10)), s, i)
                   for i, s in enumerate(req.image_seeds()))
    return GenerationResult(req, images, "tiny", "torch-cpu", {"total": 0.1})
