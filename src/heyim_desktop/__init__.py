"""HeyIm Desktop: local Stable Diffusion image generation."""

from __future__ import annotations

__version__ = "0.1.0"
