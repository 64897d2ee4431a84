"""A cheap live preview: latents projected to RGB by a fixed linear map, no model involved."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Least-squares fit of SD 1.x/2.x latent channels to RGB (rows: latent channel; cols: R, G, B).
_LATENT_TO_RGB = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)


def latents_to_rgb(latents: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(C, h, w) float latents -> (h, w, 3) uint8 RGB at latent resolution."""
    lat = np.asarray(latents, dtype=np.float32)
    if lat.ndim != 3:
        raise ValueError(f"expected (C, h, w) latents, got shape {lat.shape}")
    c = lat.shape[0]
    if c == 4:
        rgb = np.einsum("chw,cr->hwr", lat, _LATENT_TO_RGB)
    else:
        # Unknown latent space: show the first three channels, normalised.
        rgb = np.moveaxis(lat[:3] if c >= 3 else np.repeat(lat[:1], 3, axis=0), 0, -1)
        rgb = rgb / (np.abs(rgb).max() + 1e-6)
    out: npt.NDArray[np.uint8] = ((rgb + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return out
