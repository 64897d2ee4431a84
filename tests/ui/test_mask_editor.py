"""The inpainting mask editor: strokes from real mouse events, undo/redo, and the request it makes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.ui.mask_editor import InpaintDialog, MaskCanvas
from heyim_desktop.ui.qt import QPoint, Qt
from heyim_desktop.ui.tasks import pil_to_qimage

# The screenshot is looked at by hand: docs/screenshots/ only with HEYIM_SAVE_SCREENSHOTS=1, so a
# test run never changes a tracked file.
SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("HEYIM_SAVE_SCREENSHOTS")
         else Path(tempfile.gettempdir()) / f"heyim-test-shots-{os.getpid()}")


def _picture(w: int = 200, h: int = 100) -> Image.Image:
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


@pytest.fixture()
def canvas(qtbot):  # type: ignore[no-untyped-def]
    c = MaskCanvas(pil_to_qimage(_picture()))
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    qtbot.waitExposed(c)
    return c


def _at(canvas: MaskCanvas, x: float, y: float) -> QPoint:
    """The widget point over image pixel (x, y)."""
    rect, scale = canvas._target(), canvas._scale()
    return QPoint(int(rect.x() + x * scale), int(rect.y() + y * scale))


def _mask(canvas: MaskCanvas) -> np.ndarray:
    return np.asarray(canvas.mask_pil())


def test_mouse_stroke_paints_the_mask_under_the_path(qtbot, canvas) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtTest import QTest

    canvas.brush = 10
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(canvas, 20, 50))
    for x in range(20, 181, 10):
        QTest.mouseMove(canvas, _at(canvas, x, 50))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(canvas, 180, 50))
    mask = _mask(canvas)
    assert mask.shape == (100, 200)
    assert mask[50, 20:181].min() >= 200  # along the path, in image pixels
    assert mask[50, :10].max() == 0 and mask[:40, :].max() == 0 and mask[60:, :].max() == 0
    # The right button erases.
    QTest.mousePress(canvas, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, _at(canvas, 100, 50))
    QTest.mouseRelease(canvas, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, _at(canvas, 100, 50))
    assert _mask(canvas)[50, 100] == 0


def test_undo_redo_clear_invert_fill(canvas) -> None:  # type: ignore[no-untyped-def]
    canvas.brush = 8
    canvas.stroke([(10, 10), (60, 10)])
    first = _mask(canvas).copy()
    canvas.stroke([(10, 80), (60, 80)])
    assert _mask(canvas)[80, 30] == 255
    canvas.undo()
    assert np.array_equal(_mask(canvas), first)
    canvas.redo()
    assert _mask(canvas)[80, 30] == 255
    canvas.invert()
    assert _mask(canvas)[80, 30] == 0 and _mask(canvas)[50, 150] == 255
    canvas.clear()
    assert _mask(canvas).max() == 0
    canvas.fill_all()
    assert _mask(canvas).min() == 255
    for _ in range(3):
        canvas.undo()
    assert _mask(canvas)[80, 30] == 255 and _mask(canvas)[50, 150] == 0
    assert canvas.can_redo


def test_dialog_hands_back_the_request_fields(qtbot) -> None:  # type: ignore[no-untyped-def]
    dialog = InpaintDialog(_picture())
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    assert not ok.isEnabled()  # nothing painted, nothing extended
    dialog.canvas.stroke([(100, 50)])
    dialog.blur.setValue(0)
    dialog.fill_mode.setCurrentIndex(dialog.fill_mode.findData("latent noise"))
    dialog.extend["right"].setValue(64)
    assert ok.isEnabled() and "264 x 100" in dialog.canvas_label.text()
    choice = dialog.choice()
    assert choice.extend == (0, 0, 64, 0) and 0 < choice.painted_fraction() < 0.1
    spec = choice.spec()
    assert spec.blur == 0 and spec.fill == "latent noise" and spec.mask.size == (200, 100)
    dialog.resize(900, 520)
    dialog.canvas.opacity = 0.6
    dialog.canvas.stroke([(20, 20), (180, 80)])
    dialog.show()
    qtbot.waitExposed(dialog)
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(SHOTS / "09-inpaint-mask.png"))


def test_drop_panel_builds_inpaint_and_extend_fields(qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.drop_panel import DropPanel, DroppedImage
    from heyim_desktop.ui.mask_editor import InpaintChoice

    panel = DropPanel()
    qtbot.addWidget(panel)
    assert not panel.inpaint_button.isEnabled() and panel.edit_fields() == {}
    picture = _picture()
    panel.set_input(DroppedImage(picture, pil_to_qimage(picture), "pic.png"))
    assert panel.inpaint_button.isEnabled()
    mask = np.zeros((100, 200), np.uint8)
    mask[10:40, 10:40] = 255
    panel.set_inpaint(InpaintChoice(mask=Image.fromarray(mask, mode="L"), extend=(8, 0, 0, 0)))
    fields = panel.edit_fields()
    assert set(fields) == {"inpaint", "extend"} and fields["extend"].left == 8
    assert "inpaint 4% of it" in panel.caption.text() and "extend by 8, 0, 0, 0 px" in panel.caption.text()
    panel.set_inpaint(None)
    assert panel.edit_fields() == {}
    # A new picture drops the old mask: a mask belongs to the image it was painted on.
    panel.set_inpaint(InpaintChoice(mask=Image.fromarray(mask, mode="L")))
    panel.set_input(DroppedImage(picture, pil_to_qimage(picture), "other.png"))
    assert panel.inpaint is None
