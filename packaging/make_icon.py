"""Draw HeyIm's icon with Pillow and write icon.png (the committed source), icon.icns and icon.ico.

Run from the repository root: ``.venv/bin/python packaging/make_icon.py``. The design is
simple on purpose: a rounded square with a warm gradient (the "sunrise" of an image coming out of
noise) and a white spark, legible at 16 px in a menu bar.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 1024
HERE = Path(__file__).resolve().parent


def draw(size: int = SIZE) -> Image.Image:
    scale = 4  # draw large and shrink: smooth edges without an anti-aliasing library
    big = size * scale
    grad = Image.new("RGB", (1, 256))
    top, bottom = (255, 94, 98), (96, 72, 220)
    for y in range(256):
        t = y / 255
        grad.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    grad = grad.resize((big, big))
    mask = Image.new("L", (big, big), 0)
    margin = big // 10
    ImageDraw.Draw(mask).rounded_rectangle((margin, margin, big - margin, big - margin),
                                           radius=big // 5, fill=255)
    icon = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    icon.paste(grad, (0, 0), mask)
    # A four-pointed spark in the middle.
    c, r, w = big / 2, big * 0.27, big * 0.07
    spark = [(c, c - r), (c + w, c - w), (c + r, c), (c + w, c + w), (c, c + r), (c - w, c + w),
             (c - r, c), (c - w, c - w)]
    glow = Image.new("L", (big, big), 0)
    ImageDraw.Draw(glow).polygon(spark, fill=140)
    glow = glow.filter(ImageFilter.GaussianBlur(big / 40))
    icon.paste((255, 255, 255, 255), (0, 0), Image.composite(glow, Image.new("L", (big, big), 0), mask))
    ImageDraw.Draw(icon).polygon(spark, fill=(255, 255, 255, 255))
    return icon.resize((size, size), Image.Resampling.LANCZOS)


def main() -> int:
    icon = draw()
    icon.save(HERE / "icon.png")
    # The running app's window and tray icon (package data).
    icon.resize((256, 256), Image.Resampling.LANCZOS).save(HERE.parent / "src" / "heyim_desktop" / "resources" / "icon.png")
    icon.save(HERE / "icon.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    try:
        icon.save(HERE / "icon.icns")
    except (OSError, ValueError) as exc:  # older Pillow builds could not write ICNS
        print(f"icon.icns not written ({exc}); on macOS use iconutil", file=sys.stderr)
    print(f"wrote {HERE / 'icon.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
