"""The inpainting mask editor: paint over the input image what should be repainted.

The mask is a greyscale image at the input's own resolution (white = repaint). Strokes are
drawn with QPainter on the UI thread straight into it (cheap, so no stroke ever waits on the
worker); each stroke is one undo step. The dialog also sets the inpainting options and an
outpainting extension, and hands back plain values the request is built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heyim_desktop.ui.qt import (
    QCheckBox,
    QColor,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QImage,
    QLabel,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPointF,
    QPushButton,
    QRect,
    QSizePolicy,
    QSlider,
    QSpinBox,
    Qt,
    QVBoxLayout,
    QWheelEvent,
    QWidget,
    Signal,
)
from heyim_desktop.ui.tasks import pil_to_qimage

UNDO_LIMIT = 40
FILL_LABELS = (
    ("original", "Original (start from the picture)"),
    ("fill", "Fill (blurred surroundings)"),
    ("latent noise", "Latent noise"),
    ("latent nothing", "Latent nothing"),
)


@dataclass(frozen=True)
class InpaintChoice:
    """What the editor hands back: the mask and the options, as the request takes them."""

    mask: Any  # PIL "L" image at the input's size
    blur: int = 4
    invert: bool = False
    fill: str = "original"
    only_masked: bool = False
    padding: int = 32
    keep_unmasked: bool = True
    #: (left, top, right, bottom) outpainting border in pixels, or None.
    extend: tuple[int, int, int, int] | None = None

    def painted_fraction(self) -> float:
        import numpy as np

        return float((np.asarray(self.mask) >= 128).mean())

    def spec(self) -> Any:
        from heyim_desktop.core.masking import InpaintSpec

        return InpaintSpec(mask=self.mask, blur=self.blur, invert=self.invert, fill=self.fill,
                           only_masked=self.only_masked, padding=self.padding, keep_unmasked=self.keep_unmasked)

    def extend_value(self) -> Any:
        from heyim_desktop.core.masking import Extend

        return Extend(*self.extend) if self.extend and any(self.extend) else None


class MaskCanvas(QWidget):
    """The image with the mask over it; left button paints, the eraser (or right button) erases."""

    changed = Signal()
    zoom_changed = Signal(float)

    def __init__(self, image: QImage, mask: QImage | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image = image
        if mask is not None and mask.size() == image.size():
            self.mask = mask.convertToFormat(QImage.Format.Format_Grayscale8)
        else:
            self.mask = QImage(image.size(), QImage.Format.Format_Grayscale8)
            self.mask.fill(0)
        self.brush = 32
        self.erasing = False
        self.opacity = 0.5
        self.zoom = 1.0
        #: Outpainting border (left, top, right, bottom) shown around the image, in image pixels.
        self.extend = (0, 0, 0, 0)
        self._undo: list[QImage] = []
        self._redo: list[QImage] = []
        self._last: QPointF | None = None
        self._stroke_erases = False
        self.setMouseTracking(True)
        self.setMinimumSize(256, 256)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)

    # -- geometry: the image is shown centred, fitted to the widget, times the zoom -------
    def _scale(self) -> float:
        left, top, right, bottom = self.extend
        w, h = max(1, self.image.width() + left + right), max(1, self.image.height() + top + bottom)
        fit = min(self.width() / w, self.height() / h)
        return max(fit * self.zoom, 1e-3)

    def _canvas_rect(self) -> QRect:
        """Where the whole canvas (image plus outpainting border) is drawn."""
        s = self._scale()
        left, top, right, bottom = self.extend
        w = int((self.image.width() + left + right) * s)
        h = int((self.image.height() + top + bottom) * s)
        return QRect((self.width() - w) // 2, (self.height() - h) // 2, w, h)

    def _target(self) -> QRect:
        s = self._scale()
        outer = self._canvas_rect()
        left, top = self.extend[0], self.extend[1]
        return QRect(outer.x() + int(left * s), outer.y() + int(top * s),
                     int(self.image.width() * s), int(self.image.height() * s))

    def set_extend(self, extend: tuple[int, int, int, int]) -> None:
        self.extend = extend
        self.update()

    def to_image(self, pos: QPointF) -> QPointF:
        rect, s = self._target(), self._scale()
        return QPointF((pos.x() - rect.x()) / s, (pos.y() - rect.y()) / s)

    # -- editing ----------------------------------------------------------------------
    def _snapshot(self) -> None:
        self._undo.append(self.mask.copy())
        del self._undo[:-UNDO_LIMIT]
        self._redo.clear()

    def _draw(self, a: QPointF, b: QPointF, erase: bool) -> None:
        painter = QPainter(self.mask)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        colour = QColor(0, 0, 0) if erase else QColor(255, 255, 255)
        painter.setPen(QPen(colour, float(self.brush), Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                            Qt.PenJoinStyle.RoundJoin))
        if a == b:
            painter.setBrush(colour)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.drawEllipse(a, self.brush / 2, self.brush / 2)
        else:
            painter.drawLine(a, b)
        painter.end()
        self.update()

    def stroke(self, points: list[tuple[float, float]], *, erase: bool | None = None) -> None:
        """Paint one stroke through image coordinates (used by tests and scripts)."""
        if not points:
            return
        self._snapshot()
        erase = self.erasing if erase is None else erase
        pts = [QPointF(x, y) for x, y in points]
        self._draw(pts[0], pts[0], erase)
        for a, b in zip(pts, pts[1:]):
            self._draw(a, b, erase)
        self.changed.emit()

    def _apply(self, change: Any) -> None:
        self._snapshot()
        change()
        self.update()
        self.changed.emit()

    def clear(self) -> None:
        self._apply(lambda: self.mask.fill(0))

    def fill_all(self) -> None:
        self._apply(lambda: self.mask.fill(255))

    def invert(self) -> None:
        self._apply(lambda: self.mask.invertPixels())

    def undo(self) -> None:
        if self._undo:
            self._redo.append(self.mask)
            self.mask = self._undo.pop()
            self.update()
            self.changed.emit()

    def redo(self) -> None:
        if self._redo:
            self._undo.append(self.mask)
            self.mask = self._redo.pop()
            self.update()
            self.changed.emit()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def set_zoom(self, zoom: float) -> None:
        self.zoom = min(max(zoom, 0.25), 8.0)
        self.update()
        self.zoom_changed.emit(self.zoom)

    def mask_pil(self) -> Any:
        from PIL import Image

        img = self.mask.convertToFormat(QImage.Format.Format_Grayscale8)
        w, h, bpl = img.width(), img.height(), img.bytesPerLine()
        raw = bytes(img.constBits())[: bpl * h]
        return Image.frombuffer("L", (w, h), raw, "raw", "L", bpl, 1).copy()

    # -- Qt events --------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(40, 40, 40))
        target = self._target()
        if any(self.extend):
            outer = self._canvas_rect()
            painter.fillRect(outer, QColor(110, 110, 120))
            painter.setPen(QPen(QColor(255, 220, 80), 1.0, Qt.PenStyle.DashLine))
            painter.drawRect(outer.adjusted(0, 0, -1, -1))
        painter.drawImage(target, self.image)
        overlay = QImage(self.mask.size(), QImage.Format.Format_ARGB32_Premultiplied)
        overlay.fill(QColor(255, 40, 40))
        overlay.setAlphaChannel(self.mask)
        painter.setOpacity(self.opacity)
        painter.drawImage(target, overlay)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        self._snapshot()
        self._stroke_erases = self.erasing or event.button() == Qt.MouseButton.RightButton
        self._last = self.to_image(event.position())
        self._draw(self._last, self._last, self._stroke_erases)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._last is None:
            return
        point = self.to_image(event.position())
        self._draw(self._last, point, self._stroke_erases)
        self._last = point

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._last is not None:
            self._last = None
            self.changed.emit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        step = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.set_zoom(self.zoom * step)


class InpaintDialog(QDialog):
    """Paint the mask, pick the inpainting options and an optional outpainting border."""

    def __init__(self, image: Any, previous: InpaintChoice | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Inpaint and Extend")
        self.source = image
        prev_mask = pil_to_qimage(previous.mask.convert("RGB")) if previous is not None else None
        self.canvas = MaskCanvas(pil_to_qimage(image.convert("RGB")), prev_mask)

        self.brush_button = QPushButton("Brush")
        self.eraser_button = QPushButton("Eraser")
        for b in (self.brush_button, self.eraser_button):
            b.setCheckable(True)
        self.brush_button.setChecked(True)
        self.brush_button.clicked.connect(lambda: self._set_eraser(False))
        self.eraser_button.clicked.connect(lambda: self._set_eraser(True))
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(2, 256)
        self.size_slider.setValue(self.canvas.brush)
        self.size_slider.setToolTip("Brush size in pixels of the image")
        self.size_slider.valueChanged.connect(self._set_brush)
        self.size_slider.setMinimumWidth(110)
        self.size_label = QLabel()
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(self.canvas.opacity * 100))
        self.opacity_slider.setToolTip("How strongly the mask is shown over the image")
        self.opacity_slider.valueChanged.connect(self._set_opacity)
        self.opacity_slider.setMinimumWidth(80)
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.undo_button.setShortcut("Ctrl+Z")
        self.redo_button.setShortcut("Ctrl+Shift+Z")
        self.undo_button.clicked.connect(self.canvas.undo)
        self.redo_button.clicked.connect(self.canvas.redo)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.canvas.clear)
        invert = QPushButton("Invert")
        invert.clicked.connect(self.canvas.invert)
        fill = QPushButton("Fill All")
        fill.setToolTip("Mask the whole picture (repaint everything)")
        fill.clicked.connect(self.canvas.fill_all)
        self.zoom_label = QLabel("100%")
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.canvas.changed.connect(self._update_state)

        tools = QHBoxLayout()
        for w in (self.brush_button, self.eraser_button, QLabel("Size"), self.size_slider, self.size_label,
                  self.undo_button, self.redo_button, clear, invert, fill, QLabel("Overlay"), self.opacity_slider,
                  QLabel("Zoom"), self.zoom_label):
            tools.addWidget(w)

        p = previous
        self.blur = QSpinBox()
        self.blur.setRange(0, 64)
        self.blur.setValue(p.blur if p else 4)
        self.blur.setSuffix(" px")
        self.blur.setToolTip("Softens the mask's edge so the repaint blends in")
        self.fill_mode = QComboBox()
        for value, label in FILL_LABELS:
            self.fill_mode.addItem(label, value)
        self.fill_mode.setCurrentIndex(max(0, self.fill_mode.findData(p.fill if p else "original")))
        self.fill_mode.setToolTip("What the masked area starts from before it is repainted")
        self.only_masked = QCheckBox("Only masked (repaint a crop at the model's size: finer detail)")
        self.only_masked.setChecked(bool(p and p.only_masked))
        self.padding = QSpinBox()
        self.padding.setRange(0, 256)
        self.padding.setValue(p.padding if p else 32)
        self.padding.setSuffix(" px")
        self.keep = QCheckBox("Keep unmasked pixels exactly")
        self.keep.setChecked(p.keep_unmasked if p else True)
        self.invert_mode = QCheckBox("Repaint everything except the mask")
        self.invert_mode.setChecked(bool(p and p.invert))
        options = QFormLayout()
        options.addRow("Mask blur", self.blur)
        options.addRow("Masked content", self.fill_mode)
        options.addRow(self.only_masked)
        options.addRow("Padding around the mask", self.padding)
        options.addRow(self.keep)
        options.addRow(self.invert_mode)
        box = QGroupBox("Inpainting")
        box.setLayout(options)

        self.extend: dict[str, QSpinBox] = {}
        ext_layout = QFormLayout()
        for i, side in enumerate(("left", "top", "right", "bottom")):
            spin = QSpinBox()
            spin.setRange(0, 1024)
            spin.setSingleStep(8)
            spin.setSuffix(" px")
            if p and p.extend:
                spin.setValue(p.extend[i])
            spin.valueChanged.connect(self._update_state)
            self.extend[side] = spin
            ext_layout.addRow(side.capitalize(), spin)
        self.canvas_label = QLabel()
        ext_layout.addRow("New canvas", self.canvas_label)
        ext_box = QGroupBox("Extend (outpaint)")
        ext_box.setLayout(ext_layout)

        self.status = QLabel()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        side = QVBoxLayout()
        side.addWidget(box)
        side.addWidget(ext_box)
        side.addStretch(1)
        body = QHBoxLayout()
        body.addWidget(self.canvas, 1)
        body.addLayout(side)
        layout = QVBoxLayout(self)
        layout.addLayout(tools)
        layout.addLayout(body, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(980, 640)
        self._set_brush(self.canvas.brush)
        self._update_state()

    def _set_eraser(self, on: bool) -> None:
        self.canvas.erasing = on
        self.brush_button.setChecked(not on)
        self.eraser_button.setChecked(on)

    def _set_brush(self, size: int) -> None:
        self.canvas.brush = size
        self.size_label.setText(f"{size} px")

    def _set_opacity(self, value: int) -> None:
        self.canvas.opacity = value / 100
        self.canvas.update()

    def extension(self) -> tuple[int, int, int, int]:
        return tuple(self.extend[s].value() // 8 * 8 for s in ("left", "top", "right", "bottom"))  # type: ignore[return-value]

    def _update_state(self) -> None:
        self.undo_button.setEnabled(self.canvas.can_undo)
        self.redo_button.setEnabled(self.canvas.can_redo)
        left, top, right, bottom = self.extension()
        self.canvas.set_extend((left, top, right, bottom))
        w, h = self.source.size
        self.canvas_label.setText(f"{w + left + right} x {h + top + bottom} (input {w} x {h})")
        painted = not self.canvas.mask.isNull() and self.choice_fraction() > 0
        extending = any((left, top, right, bottom))
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(painted or extending)
        self.status.setText("" if painted or extending else "Paint the area to repaint (white), or set an extension.")

    def choice_fraction(self) -> float:
        import numpy as np

        return float((np.asarray(self.canvas.mask_pil()) >= 128).mean())

    def choice(self) -> InpaintChoice:
        ext = self.extension()
        return InpaintChoice(
            mask=self.canvas.mask_pil(), blur=self.blur.value(), invert=self.invert_mode.isChecked(),
            fill=str(self.fill_mode.currentData()), only_masked=self.only_masked.isChecked(),
            padding=self.padding.value(), keep_unmasked=self.keep.isChecked(),
            extend=ext if any(ext) else None,
        )
