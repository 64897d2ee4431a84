"""What a request may cost before any work starts: its JSON, and its input images' pixels.

* JSON: parsed with hooks so that NaN/Infinity, numbers that overflow (``1e999``) and
  integers longer than :data:`MAX_INT_DIGITS` never become Python values; then walked
  (iteratively) for nesting deeper than :data:`MAX_JSON_DEPTH` and for strings that are not
  valid Unicode (lone surrogates, which would fail later in the tokenizer, the PNG text chunk
  or SQLite). Every refusal names the field (``override_settings.foo``, ``init_images[0]``).
* Pixels: an input image's header is read first; more than :data:`MAX_INPUT_PIXELS` is a
  413 before anything is decoded. Decoding is charged to a process-wide
  :class:`PixelBudget` (several requests at once), and the image is shrunk at once to what
  the model uses (the request's size), so the queue holds the small version.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import io
import json
import logging
import math
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from heyim_desktop.api.mapping import ApiError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 40
#: Largest input image the API decodes (header pixels): 4096 x 4096. Nothing generates larger
#: than 2048 x 2048, and an input is shrunk to the request's size right after decoding.
MAX_INPUT_PIXELS = 4096 * 4096
#: Pixels all requests together may be decoding or holding in the queue at once.
TOTAL_PIXEL_BUDGET = 3 * MAX_INPUT_PIXELS
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused:
    """A JSON value the hooks refused; the walk reports it with its field."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def _parse_int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"a whole number of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _field(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or :class:`ApiError` (400 for the syntax, 422 naming a bad value's field)."""
    if not raw.strip():
        raise ApiError(400, "the body is empty: send a JSON object", "body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 ({exc.reason} at byte {exc.start})", "body") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = json.loads(text, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except RecursionError:
        raise ApiError(400, f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)", "body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                       "body") from None
    except ValueError as exc:  # anything else the parser itself refuses
        raise ApiError(400, f"the body is not valid JSON ({str(exc)[:200]})", "body") from None
    check_json(data)
    return data


def check_json(data: Any) -> None:
    """Walk parsed JSON without recursion: depth, refused values and invalid text, with the field."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise ApiError(400, f"{_field(path[:MAX_JSON_DEPTH])}: nested too deeply (at most {MAX_JSON_DEPTH} levels)",
                           _field(path[:1]))
        if isinstance(value, _Refused):
            name = _field(path)
            raise ApiError(422, f"{name}: {value.reason}", name)
        if isinstance(value, str):
            if _SURROGATE.search(value):
                name = _field(path)
                raise ApiError(422, f"{name}: is not valid Unicode text (it holds a lone surrogate)", name)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    name = _field(path)
                    raise ApiError(422, f"{name}: a key is not valid Unicode text (it holds a lone surrogate)", name)
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))


class PixelBudget:
    """Pixels being decoded or held by queued requests, across every request of one server."""

    def __init__(self, total: int = TOTAL_PIXEL_BUDGET) -> None:
        self.total = total
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def reserve(self, pixels: int, field: str) -> None:
        with self._lock:
            if self._used + pixels > self.total:
                raise ApiError(413, f"{field}: the server is already decoding or holding {self._used:,} input pixels "
                                    f"(at most {self.total:,} at once); try again when the queue is shorter", field)
            self._used += pixels

    def release(self, pixels: int) -> None:
        with self._lock:
            self._used = max(0, self._used - pixels)

    @contextmanager
    def hold(self, pixels: int, field: str) -> Iterator[None]:
        self.reserve(pixels, field)
        try:
            yield
        finally:
            self.release(pixels)


def image_bytes(data: Any, field: str) -> bytes:
    """The raw bytes of a base64 (or data URL) image field, or 422."""
    from heyim_desktop.core.codec import MAX_INLINE_IMAGE_BYTES

    if not isinstance(data, str):
        raise ApiError(422, f"{field}: must be a base64 image, got {type(data).__name__}", field)
    if data.lstrip().startswith("data:") and "," in data[:200]:
        data = data.split(",", 1)[1]
    data = data.strip()
    if not data:
        raise ApiError(422, f"{field}: is empty; send a base64 image", field)
    if len(data) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4:
        raise ApiError(413, f"{field}: image is larger than {MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MB", field)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{field}: is not valid base64", field) from None
    if not raw:
        raise ApiError(422, f"{field}: is empty; send a base64 image", field)
    return raw


def image_size(raw: bytes, field: str) -> tuple[int, int]:
    """The size an image's header claims, read without decoding; 413 over :data:`MAX_INPUT_PIXELS`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                width, height = img.size
    except UnidentifiedImageError:
        raise ApiError(422, f"{field}: is not an image format HeyIm can read (PNG, JPEG, WebP, BMP, TIFF, GIF)",
                       field) from None
    except Image.DecompressionBombError:  # claims more than Pillow itself allows
        side = math.isqrt(MAX_INPUT_PIXELS)
        raise ApiError(413, f"{field}: the image claims hundreds of millions of pixels; the largest accepted is "
                            f"{MAX_INPUT_PIXELS:,} pixels (for example {side}x{side})", field) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApiError(422, f"{field}: is damaged and cannot be read ({exc})", field) from None
    if width <= 0 or height <= 0:
        raise ApiError(422, f"{field}: has no pixels", field)
    if width * height > MAX_INPUT_PIXELS:
        side = math.isqrt(MAX_INPUT_PIXELS)
        raise ApiError(413, f"{field}: the image is {width}x{height} pixels; the largest accepted is "
                            f"{MAX_INPUT_PIXELS:,} pixels (for example {side}x{side}); shrink it first", field)
    return width, height


def decode_fitted(raw: bytes, field: str, width: int, height: int, *, fit: bool = True) -> "Image.Image":
    """Decode (an :data:`MAX_INPUT_PIXELS`-checked image) and shrink it to ``width x height`` at once.

    ``fit=False`` keeps the decoded size (inpainting "only masked" works on the whole image).
    """
    from heyim_desktop.core.errors import ImageError
    from heyim_desktop.core.images import fit_to_size, load_image

    try:
        image = load_image(raw, name=field)
    except ImageError as exc:
        raise ApiError(422, f"{field}: {str(exc).removeprefix(field).strip()}", field) from None
    if not fit:
        return image
    small = fit_to_size(image, width, height)
    if small is not image:
        image.close()
    del image
    return small


_LIBC: Any = None


def release_memory() -> None:
    """Hand freed heap back to the system after a large decode (glibc keeps it otherwise)."""
    global _LIBC
    if not sys.platform.startswith("linux") or _LIBC is False:
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to do
        _LIBC = False
