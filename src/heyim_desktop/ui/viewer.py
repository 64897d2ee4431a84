"""The large viewer: one image full screen with its zoom level; arrow keys step through history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heyim_desktop.ui.qt import (
    QHBoxLayout,
    QImage,
    QKeyEvent,
    QLabel,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.result_view import ShownImage, entry_caption
from heyim_desktop.ui.tasks import run_in_background
from heyim_desktop.ui.zoom_view import ZoomView


class ImageViewer(QWidget):
    """Esc or F closes; Left/Right (or Up/Down) move to the newer/older image of the history grid."""

    #: The history entry now shown (its id), so the grid's selection can follow.
    entry_shown = Signal(int)

    def __init__(self, history_model: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("HeyIm Viewer")
        self.model = history_model
        self.row: int | None = None
        self.shown: ShownImage | None = None
        self._token = 0
        self.view = ZoomView()
        self.zoom_label = QLabel()
        self.caption = QLabel()
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.position = QLabel()
        fit = QToolButton()
        fit.setText("Fit")
        fit.clicked.connect(self.view.fit_to_window)
        actual = QToolButton()
        actual.setText("100%")
        actual.clicked.connect(self.view.actual_size)
        hint = QLabel("\u2190 \u2192 previous/next   scroll to zoom   Esc closes")
        hint.setEnabled(False)
        self.view.zoom_changed.connect(lambda _z: self.zoom_label.setText(self.view.zoom_text()))
        bar = QHBoxLayout()
        for w in (fit, actual, self.zoom_label, self.position):
            bar.addWidget(w)
        bar.addWidget(self.caption, 1)
        bar.addWidget(hint)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addWidget(self.view, 1)
        layout.addLayout(bar)

    def open_at(self, shown: ShownImage, full_screen: bool = True) -> None:
        entry_id = shown.entry_id
        self.row = self.model.row_of(entry_id) if entry_id is not None else None
        self._show(shown)
        if full_screen:
            self.showFullScreen()
        else:
            self.show()
        self.raise_()
        self.activateWindow()
        self.view.fit_to_window()

    def _show(self, shown: ShownImage) -> None:
        self.shown = shown
        self.view.set_image(shown.image)
        self.view.drag_payload = (shown.image, shown.path)
        self.caption.setText(shown.caption)
        n = self.model.rowCount()
        self.position.setText(f"{self.row + 1} of {n}" if self.row is not None else "")
        self.zoom_label.setText(self.view.zoom_text())

    def step(self, delta: int) -> bool:
        """Show the image ``delta`` rows away in history (+1 older, -1 newer); False at either end."""
        if self.row is None:
            return False
        row = self.row + delta
        entry = self.model.entry_at(row)
        if entry is None:
            return False
        self.row = row
        self._token += 1
        token = self._token
        path = Path(entry.path)

        def loaded(image: QImage) -> None:
            if token != self._token:
                return
            if image.isNull():
                self.caption.setText(f"Cannot open {path.name}: the file is missing or damaged.")
                return
            self._show(ShownImage(image, path, entry, entry_caption(entry)))
            self.entry_shown.emit(int(entry.id))

        run_in_background(lambda: QImage(str(path)), loaded)
        return True

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        key = event.key()
        if key in (Qt.Key.Key_Right, Qt.Key.Key_Down):
            self.step(+1)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.step(-1)
        elif key in (Qt.Key.Key_Escape, Qt.Key.Key_F, Qt.Key.Key_F11):
            self.close()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.view.zoom_by(1.25)
        elif key == Qt.Key.Key_Minus:
            self.view.zoom_by(0.8)
        elif key == Qt.Key.Key_0:
            self.view.fit_to_window()
        else:
            super().keyPressEvent(event)
