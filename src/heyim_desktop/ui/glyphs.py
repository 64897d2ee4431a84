"""Symbols on buttons, with words where the font lacks the symbol (no tofu boxes)."""

from __future__ import annotations

from heyim_desktop.ui.qt import QFontMetrics, QWidget

DICE = "\u2684"  # die face five
FULL_SCREEN = "\u26f6"  # square four corners


def symbol(widget: QWidget, glyph: str, fallback: str) -> str:
    """``glyph`` if ``widget``'s font draws every character of it, else ``fallback``."""
    metrics = QFontMetrics(widget.font())
    return glyph if all(metrics.inFontUcs4(ord(c)) for c in glyph) else fallback
