from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.core.errors import ImageError
from heyim_desktop.core.images import fit_to_size, load_image, to_rgb


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with a tiny (invalid) body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _good_png(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.png", b"", "empty"),
        ("truncated.png", _good_png((300, 300))[:120], "damaged or truncated"),
        ("notes.png", b"this is just some text, not a picture\n" * 5, "not an image format"),
        ("huge.png", _png_claiming(20000, 20000), "too large"),
        ("big.png", _png_claiming(9000, 9000), "9000x9000"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert fragment in str(info.value)
    assert name in str(info.value)
    with pytest.raises(ImageError):
        load_image(content, name=name)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (20, 60)


def test_alpha_is_flattened_onto_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    rgb = to_rgb(img)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_greyscale_is_scaled() -> None:
    arr = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    img = Image.fromarray(arr)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.getpixel((3, 3))[0] == 255


def test_fit_keeps_aspect_and_centre_crops() -> None:
    # Left third red, middle green, right third blue: a wide image cropped to a square keeps the middle.
    img = Image.new("RGB", (300, 100))
    for x, colour in ((0, (255, 0, 0)), (100, (0, 255, 0)), (200, (0, 0, 255))):
        img.paste(colour, (x, 0, x + 100, 100))
    out = fit_to_size(img, 64, 64)
    assert out.size == (64, 64)
    r, g, b = out.getpixel((32, 32))
    assert g > 200 and r < 50 and b < 50
