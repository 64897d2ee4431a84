"""Inpainting reached from anywhere in the window: "Edit / Inpaint..." on the shown result or a
history entry, and Reuse Settings bringing back an inpainted image's input picture and mask.

The picture becomes the input image (decoded off the UI thread, as any input) and the mask
editor opens on it; the job is then an ordinary inpainting job from the input panel.
History keeps an inpainted image's input and mask beside it (``<image>.source.png``,
``<image>.mask.png``, see :meth:`heyim_desktop.store.history.HistoryEntry.edit_files`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: InpaintChoice fields a history entry's settings may restore.
_CHOICE_FIELDS = ("blur", "invert", "fill", "only_masked", "padding", "keep_unmasked")


class Inpainting:
    """The window's way into the mask editor from results and history."""

    def __init__(self, window: Any) -> None:
        self.window = window

    def edit(self, source: Any) -> bool:
        """Open ``source`` (a shown image or a history entry) in the mask editor as the input image."""
        entry = getattr(source, "entry", None) or (source if hasattr(source, "parameters") else None)
        path = getattr(source, "path", None) or (entry.path if entry is not None else None)
        panel = self.window.drop_panel
        if path is not None and Path(path).is_file():
            panel.load_file(Path(path), from_history=True, then_edit=True)
            return True
        image = getattr(source, "image", None)
        if image is not None and hasattr(image, "isNull") and not image.isNull():  # shown, not saved
            panel.load_qimage(image, "Result image", then_edit=True)
            return True
        self.window.status("This image's file is gone; nothing to inpaint.")
        return False

    def reuse(self, entry: Any) -> bool:
        """Restore the input picture and mask an inpainted entry kept; False when it has none."""
        settings = getattr(entry, "settings", None)
        if not isinstance(settings, dict) or not (settings.get("inpaint") or settings.get("edit_files")):
            return False
        source, mask = entry.edit_files()
        if source is None or mask is None:
            self.window.status("Settings loaded; this inpainted image's input picture and mask are no longer "
                               "beside it, so only the settings came back.")
            return False
        self.window.drop_panel.load_edit(
            source, mask, choice_options(entry),
            done=lambda: self.window.status("Settings, input picture and mask loaded from history."),
        )
        return True


def choice_options(entry: Any) -> dict[str, Any]:
    """The mask editor's options (``InpaintChoice`` fields but the mask) recorded with ``entry``."""
    from heyim_desktop.core.masking import FILL_MODES, MAX_BLUR, MAX_EXTEND, MAX_PADDING

    recorded = entry.inpaint_settings()
    out: dict[str, Any] = {}
    for key in _CHOICE_FIELDS:
        value = recorded.get(key)
        if key in ("blur", "padding"):
            top = MAX_BLUR if key == "blur" else MAX_PADDING
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top:
                out[key] = value
        elif key == "fill":
            if value in FILL_MODES:
                out[key] = value
        elif isinstance(value, bool):
            out[key] = value
    extend = entry.settings.get("extend")
    if (isinstance(extend, list) and len(extend) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_EXTEND and v % 8 == 0
                    for v in extend)):
        out["extend"] = tuple(extend)
    return out
