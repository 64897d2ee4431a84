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


# Published latent-to-RGB factors for the diffusion-transformer VAEs (ComfyUI's comfy/latent_formats.py,
# classes SD3, Flux and Flux2), applied to the latents as the transformer sees them (scaled and shifted).
# Rows: latent channel; columns: R, G, B; then the bias added to each colour.
_SD3_TO_RGB = (
    [[-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458], [0.0856, 0.0339, 0.0902],
     [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309], [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358],
     [-0.0194, 0.0020, 0.0669], [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
     [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293], [-0.1448, -0.1463, -0.1189]],
    [0.2394, 0.2135, 0.1925],
)
#: FLUX.1's 16-channel VAE, which Z-Image uses too.
_FLUX1_TO_RGB = (
    [[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
     [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
     [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
     [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778]],
    [-0.0329, -0.0718, -0.0851],
)
#: FLUX.2's 32-channel VAE; the transformer's 128 channels are its 2x2 patches (channel-major: c, dy, dx).
_FLUX2_TO_RGB = (
    [[0.0058, 0.0113, 0.0073], [0.0495, 0.0443, 0.0836], [-0.0099, 0.0096, 0.0644], [0.2144, 0.3009, 0.3652],
     [0.0166, -0.0039, -0.0054], [0.0157, 0.0103, -0.0160], [-0.0398, 0.0902, -0.0235], [-0.0052, 0.0095, 0.0109],
     [-0.3527, -0.2712, -0.1666], [-0.0301, -0.0356, -0.0180], [-0.0107, 0.0078, 0.0013], [0.0746, 0.0090, -0.0941],
     [0.0156, 0.0169, 0.0070], [-0.0034, -0.0040, -0.0114], [0.0032, 0.0181, 0.0080], [-0.0939, -0.0008, 0.0186],
     [0.0018, 0.0043, 0.0104], [0.0284, 0.0056, -0.0127], [-0.0024, -0.0022, -0.0030], [0.1207, -0.0026, 0.0065],
     [0.0128, 0.0101, 0.0142], [0.0137, -0.0072, -0.0007], [0.0095, 0.0092, -0.0059], [0.0000, -0.0077, -0.0049],
     [-0.0465, -0.0204, -0.0312], [0.0095, 0.0012, -0.0066], [0.0290, -0.0034, 0.0025], [0.0220, 0.0169, -0.0048],
     [-0.0332, -0.0457, -0.0468], [-0.0085, 0.0389, 0.0609], [-0.0076, 0.0003, -0.0043], [-0.0111, -0.0460, -0.0614]],
    [-0.0329, -0.0718, -0.0851],
)
#: Latent spaces with published factors: name -> (factors, bias); the family table names its space.
LATENT_SPACES: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd3": _SD3_TO_RGB, "flux1": _FLUX1_TO_RGB, "flux2": _FLUX2_TO_RGB,
}


def latents_to_rgb(latents: npt.ArrayLike, space: str | None = None) -> npt.NDArray[np.uint8]:
    """(C, h, w) float latents -> (h, w, 3) uint8 RGB at latent resolution.

    ``space`` names a latent space of :data:`LATENT_SPACES` (a family's VAE); its published factors are
    used when the channels match (FLUX.2's 128 patch channels are laid out as 32 channels at twice the
    size first). Otherwise 4 channels take SD's factors, and anything else shows its first three
    channels, normalised.
    """
    lat = np.asarray(latents, dtype=np.float32)
    if lat.ndim != 3:
        raise ValueError(f"expected (C, h, w) latents, got shape {lat.shape}")
    c = lat.shape[0]
    table = LATENT_SPACES.get(space or "")
    if table is not None:
        factors = np.asarray(table[0], dtype=np.float32)
        if c == 4 * factors.shape[0]:  # 2x2 patches: (c, dy, dx, h, w) -> (c, h, dy, w, dx)
            h, w = lat.shape[1:]
            lat = lat.reshape(factors.shape[0], 2, 2, h, w).transpose(0, 3, 1, 4, 2).reshape(
                factors.shape[0], 2 * h, 2 * w)
            c = factors.shape[0]
        if c != factors.shape[0]:
            table = None
    if table is not None:
        rgb = np.einsum("chw,cr->hwr", lat, factors) + np.asarray(table[1], dtype=np.float32)
    elif c == 4:
        rgb = np.einsum("chw,cr->hwr", lat, _LATENT_TO_RGB)
    else:
        # Unknown latent space: show the first three channels, normalised.
        rgb = np.moveaxis(lat[:3] if c >= 3 else np.repeat(lat[:1], 3, axis=0), 0, -1)
        rgb = rgb / (np.abs(rgb).max() + 1e-6)
    out: npt.NDArray[np.uint8] = ((rgb + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return out
