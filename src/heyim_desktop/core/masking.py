"""Inpainting and outpainting settings, and the pixel work around them (no torch).

A mask is white where the image is repainted and black where it is kept; grey levels
blend. The pixel steps (fitting the mask to the image, blur, invert, AUTOMATIC1111's
"fill" pre-fill, the "only masked" crop and its paste-back, outpainting's canvas) live
here; the latent side (blending, an inpainting UNet's extra channels) is
:mod:`heyim_desktop.core.inpaint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from heyim_desktop.core.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

#: AUTOMATIC1111's "Masked content" choices (its ``inpainting_fill`` 0..3, in its order).
FILL_MODES = ("fill", "original", "latent noise", "latent nothing")
MAX_BLUR = 64
MAX_PADDING = 256
MAX_EXTEND = 1024
#: Width of the soft seam an outpainted border fades in over, in pixels.
OUTPAINT_SEAM = 16


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(name, f"must be a whole number from {lo} to {hi}, got {value!r}")
    return value


@dataclass(frozen=True)
class InpaintSpec:
    """Repaint the white part of ``mask`` (any size: it is fitted to the image like the image)."""

    mask: "Image.Image" = field(compare=False, repr=False)
    blur: int = 4
    invert: bool = False
    fill: str = "original"
    #: AUTOMATIC1111's "Only masked": repaint a crop around the mask at the model's size.
    only_masked: bool = False
    padding: int = 32
    #: Paste the result back through the mask, so kept pixels stay exactly as they were.
    keep_unmasked: bool = True

    def __post_init__(self) -> None:
        from PIL import Image

        if not isinstance(self.mask, Image.Image):
            raise InvalidRequest("mask", "must be an image")
        _check_int("mask_blur", self.blur, 0, MAX_BLUR)
        _check_int("inpaint_padding", self.padding, 0, MAX_PADDING)
        if self.fill not in FILL_MODES:
            raise InvalidRequest("inpainting_fill", f"must be one of {', '.join(FILL_MODES)}, got {self.fill!r}")


@dataclass(frozen=True)
class Extend:
    """Outpainting: grow the canvas by these many pixels on each side (multiples of 8)."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def __post_init__(self) -> None:
        for name in ("left", "top", "right", "bottom"):
            value = _check_int(f"extend.{name}", getattr(self, name), 0, MAX_EXTEND)
            if value % 8:
                raise InvalidRequest(f"extend.{name}", f"must be a multiple of 8, got {value}")
        if not any((self.left, self.top, self.right, self.bottom)):
            raise InvalidRequest("extend", "give at least one side a size above 0")

    @classmethod
    def parse(cls, text: str) -> "Extend":
        """``LEFT,TOP,RIGHT,BOTTOM`` as the CLI takes it."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise InvalidRequest("extend", f"expected LEFT,TOP,RIGHT,BOTTOM in pixels (e.g. 0,0,128,0), got {text!r}")
        left, top, right, bottom = (int(p) for p in parts)
        return cls(left, top, right, bottom)


# -- masks as arrays -----------------------------------------------------------------


def mask_to_array(mask: "Image.Image") -> "npt.NDArray[np.float32]":
    """(H, W) float32 in [0, 1]; a transparent pixel counts as black (kept)."""
    import numpy as np

    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        lum = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        return (lum * alpha).astype(np.float32)
    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def prepare_mask(spec: InpaintSpec, width: int, height: int) -> "npt.NDArray[np.float32]":
    """The mask fitted to ``width x height`` as the image is, inverted and blurred as asked."""
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.images import fit_to_size

    fitted = fit_to_size(spec.mask.convert("L") if spec.mask.mode not in ("RGBA", "LA", "PA", "P") else spec.mask,
                         width, height)
    arr = mask_to_array(fitted)
    if spec.invert:
        arr = 1.0 - arr
    if spec.blur:
        blurred = Image.fromarray((arr * 255).round().astype(np.uint8), mode="L")
        from PIL import ImageFilter

        arr = np.asarray(blurred.filter(ImageFilter.GaussianBlur(spec.blur)), dtype=np.float32) / 255.0
    return arr.astype(np.float32)


def check_not_empty(mask: "npt.NDArray[np.float32]") -> None:
    if float(mask.max(initial=0.0)) < 1.0 / 255.0:
        raise InvalidRequest("mask", "the mask is empty (all black): paint the area to repaint in white")


def fill_masked(image: "Image.Image", mask: "npt.NDArray[np.float32]") -> "Image.Image":
    """AUTOMATIC1111's "fill": the masked area painted with its blurred surroundings."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    keep = (mask < 0.5).astype(np.float64)
    if keep.sum() == 0:
        return image.convert("RGB")
    out = rgb.copy()
    filled = keep.copy()
    # Normalised convolution from wide to narrow: every hole pixel gets the average of the
    # kept pixels around it, sharper the closer they are.
    for sigma in (128, 64, 32, 16, 8, 4, 2, 1):
        weight = gaussian_filter(keep, sigma, mode="nearest")
        if weight.max() <= 0:
            continue
        colour = np.stack([gaussian_filter(rgb[..., c] * keep, sigma, mode="nearest") for c in range(3)], axis=-1)
        valid = weight > 1e-6
        estimate = np.where(valid[..., None], colour / np.maximum(weight, 1e-12)[..., None], 0.0)
        take = (filled < 1) & valid
        out[take] = estimate[take]
        filled = np.maximum(filled, take.astype(np.float64))
    out = rgb * keep[..., None] + out * (1 - keep[..., None])
    return Image.fromarray((out * 255).round().clip(0, 255).astype(np.uint8), mode="RGB")


def paste_back(
    generated: "npt.NDArray[np.float32]", original: "npt.NDArray[np.float32]", mask: "npt.NDArray[np.float32]"
) -> "npt.NDArray[np.float32]":
    """Generated pixels where the mask is white, the original's where it is black, blended between."""
    import numpy as np

    m = mask[..., None]
    out: npt.NDArray[np.float32] = (original * (1.0 - m) + generated * m).astype(np.float32)
    return out


def pil_to_float(image: "Image.Image") -> "npt.NDArray[np.float32]":
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


# -- "only masked": the crop around the mask ------------------------------------------


def crop_region(mask: "npt.NDArray[np.float32]", padding: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) around the mask, padded, grown to the target's aspect ratio, inside the image."""
    import numpy as np

    h, w = mask.shape
    ys, xs = np.nonzero(mask > 0)
    x1, y1 = max(int(xs.min()) - padding, 0), max(int(ys.min()) - padding, 0)
    x2, y2 = min(int(xs.max()) + 1 + padding, w), min(int(ys.max()) + 1 + padding, h)
    tw, th = target
    ratio = tw / th
    cw, ch = x2 - x1, y2 - y1
    if cw / ch < ratio:  # too narrow: widen
        want = min(w, int(round(ch * ratio)))
        x1, x2 = _grow(x1, x2, want, w)
        cw = x2 - x1
        if cw / ch < ratio - 1e-6:  # the image is not wide enough: shorten instead
            want_h = max(1, int(round(cw / ratio)))
            cy = (y1 + y2) // 2
            y1, y2 = _grow(cy, cy, want_h, h)
    elif cw / ch > ratio:  # too wide: heighten
        want = min(h, int(round(cw / ratio)))
        y1, y2 = _grow(y1, y2, want, h)
        ch = y2 - y1
        if cw / ch > ratio + 1e-6:
            want_w = max(1, int(round(ch * ratio)))
            cx = (x1 + x2) // 2
            x1, x2 = _grow(cx, cx, want_w, w)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """[lo, hi) grown (or shrunk around its centre) to ``want`` long, shifted to stay in [0, limit)."""
    extra = want - (hi - lo)
    lo -= extra // 2
    hi = lo + want
    if lo < 0:
        lo, hi = 0, want
    if hi > limit:
        lo, hi = limit - want, limit
    return max(lo, 0), min(hi, limit)


# -- outpainting ----------------------------------------------------------------------


def outpaint_canvas(image: "Image.Image", extend: Extend, seed: int) -> tuple["Image.Image", "Image.Image"]:
    """The grown canvas (the new border pre-filled by edge extension plus noise) and its mask.

    The mask is black over the original image, so it stays untouched, and fades to white
    over the first :data:`OUTPAINT_SEAM` pixels of the new border.
    """
    import numpy as np
    from PIL import Image

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    pads = ((extend.top, extend.bottom), (extend.left, extend.right), (0, 0))
    grown = np.pad(rgb, pads, mode="edge")
    rng = np.random.default_rng(seed)
    border = np.ones(grown.shape[:2], dtype=bool)
    border[extend.top : extend.top + h, extend.left : extend.left + w] = False
    noise = rng.normal(0.0, 24.0, size=grown.shape).astype(np.float32)
    grown[border] = np.clip(grown[border] + noise[border], 0, 255)
    # Distance (in pixels) of every border pixel from the original image, for the seam.
    yy, xx = np.mgrid[0 : grown.shape[0], 0 : grown.shape[1]]
    dx = np.maximum(np.maximum(extend.left - xx, xx - (extend.left + w - 1)), 0)
    dy = np.maximum(np.maximum(extend.top - yy, yy - (extend.top + h - 1)), 0)
    dist = np.maximum(dx, dy).astype(np.float32)
    mask = np.clip(dist / OUTPAINT_SEAM, 0.0, 1.0)
    canvas = Image.fromarray(grown.round().astype(np.uint8), mode="RGB")
    return canvas, Image.fromarray((mask * 255).round().astype(np.uint8), mode="L")
