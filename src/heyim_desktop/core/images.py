"""Reading input images safely and shaping them for image-to-image."""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from heyim_desktop.core.errors import ImageError

log = logging.getLogger(__name__)

#: Largest input we decode: 8192 x 8192. Anything claiming more is refused before decoding.
MAX_INPUT_PIXELS = 8192 * 8192
MAX_INPUT_BYTES = 200 * 1024 * 1024


def load_mask(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Image.Image:
    """Decode a mask as a greyscale image (white = repaint); transparent pixels count as black."""
    import numpy as np

    from heyim_desktop.core.masking import mask_to_array

    img = load_image(source, name, keep_alpha=True)
    return Image.fromarray((mask_to_array(img) * 255).round().astype(np.uint8), mode="L")


def load_image(
    source: str | os.PathLike[str] | bytes, name: str | None = None, *, keep_alpha: bool = False
) -> Image.Image:
    """Decode an image from a path or bytes into an RGB Pillow image, EXIF-upright, alpha flattened.

    Raises :class:`ImageError` with a message naming the file for anything unreadable.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "the image"
        data = bytes(source)
        if not data:
            raise ImageError(f"{label} is empty (0 bytes).")
        if len(data) > MAX_INPUT_BYTES:
            raise ImageError(f"{label} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB.")
        return _decode(io.BytesIO(data), label, keep_alpha)
    path = Path(source)
    label = name or path.name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found.") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read the file ({exc.strerror or exc}).") from None
    if path.is_dir():
        raise ImageError(f"{label} is a folder, not an image.")
    if size == 0:
        raise ImageError(f"{label} is empty (0 bytes).")
    if size > MAX_INPUT_BYTES:
        raise ImageError(f"{label} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB.")
    try:
        with open(path, "rb") as fh:
            return _decode(fh, label, keep_alpha)
    except PermissionError:
        raise ImageError(f"{label}: permission denied.") from None


def _decode(fh: BinaryIO, label: str, keep_alpha: bool = False) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise ImageError(f"{label} has no pixels.")
                if w * h > MAX_INPUT_PIXELS:
                    raise ImageError(
                        f"{label} is {w}x{h} pixels, too large: the largest accepted is "
                        f"{MAX_INPUT_PIXELS:,} pixels (for example 8192x8192)."
                    )
                img.load()
                upright = ImageOps.exif_transpose(img)
                if keep_alpha and upright.mode in ("RGBA", "LA", "PA", "P", "L", "RGB"):
                    return upright.convert("RGBA") if upright.mode in ("RGBA", "LA", "PA", "P") else upright.copy()
                return to_rgb(upright)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image format HeyIm can read (PNG, JPEG, WebP, BMP, TIFF, GIF).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own message talks of "decompression bomb DOS attacks": say HeyIm's limit instead.
        raise ImageError(
            f"{label} is too large: the largest image HeyIm accepts is {MAX_INPUT_PIXELS:,} pixels "
            "(for example 8192x8192). Scale it down and try again."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        log.info("cannot decode %s: %s", label, exc)
        raise ImageError(f"{label} is damaged or truncated and cannot be decoded ({exc}).") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of ``img``; transparency is flattened onto white, high bit depths scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_to_size(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize keeping the aspect ratio so the image covers ``width x height``, then centre-crop."""
    if img.size == (width, height):
        return img
    return ImageOps.fit(img, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
