"""The result view: zoomable image, the live preview while denoising, and what to do with a result."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from heyim_desktop.ui.qt import (
    QApplication,
    QDesktopServices,
    QDrag,
    QFileDialog,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QImage,
    QLabel,
    QMimeData,
    QPainter,
    QPixmap,
    QPoint,
    QProgressBar,
    QPushButton,
    Qt,
    QToolButton,
    QUrl,
    QVBoxLayout,
    QWheelEvent,
    QWidget,
    Signal,
)
from heyim_desktop.ui.tasks import run_in_background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShownImage:
    image: QImage
    path: Path | None = None
    entry: Any = None  # HistoryEntry when the image is in history
    caption: str = ""


def image_mime(image: QImage | None, path: Path | None) -> QMimeData:
    """What a drag or a copy carries: the file (for file managers and editors) and the pixels."""
    mime = QMimeData()
    if path is not None:
        mime.setUrls([QUrl.fromLocalFile(str(path))])
    if image is not None and not image.isNull():
        mime.setImageData(image)
    return mime


def show_in_file_manager(path: Path) -> None:
    """Reveal ``path`` (selected where the platform allows it)."""
    try:
        if sys.platform == "darwin":
            subprocess.Popen(["open", "-R", str(path)])
            return
        if sys.platform == "win32":
            subprocess.Popen(["explorer", "/select,", str(path)])
            return
    except OSError:
        log.info("cannot reveal %s; opening its folder", path, exc_info=True)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))


class ZoomView(QGraphicsView):
    """Wheel zooms, drag pans when zoomed in; when the whole image shows, a drag carries it out."""

    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self.item)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.fit = True
        self.drag_payload: tuple[QImage | None, Path | None] = (None, None)
        self._press: QPoint | None = None

    def set_image(self, image: QImage, smooth: bool = True) -> None:
        mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
        self.item.setTransformationMode(mode)
        self.item.setPixmap(QPixmap.fromImage(image))
        self.scene().setSceneRect(self.item.boundingRect())
        if self.fit:
            self.fit_to_window()

    def clear(self) -> None:
        self.item.setPixmap(QPixmap())

    def fit_to_window(self) -> None:
        self.fit = True
        if not self.item.pixmap().isNull():
            self.fitInView(self.item, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.transform().m11())

    def zoom_by(self, factor: float) -> None:
        current = self.transform().m11()
        factor = max(0.05, min(32.0, current * factor)) / current
        self.fit = False
        self.scale(factor, factor)
        self._update_drag_mode()
        self.zoom_changed.emit(self.transform().m11())

    def actual_size(self) -> None:
        self.fit = False
        self.resetTransform()
        self._update_drag_mode()
        self.zoom_changed.emit(1.0)

    def _update_drag_mode(self) -> None:
        scrollable = self.horizontalScrollBar().maximum() > 0 or self.verticalScrollBar().maximum() > 0
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if scrollable else QGraphicsView.DragMode.NoDrag)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        if self.item.pixmap().isNull():
            return
        self.zoom_by(1.25 if event.angleDelta().y() > 0 else 0.8)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self.fit:
            self.fit_to_window()

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._press = event.position().toPoint() if event.button() == Qt.MouseButton.LeftButton else None
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if (self._press is not None and self.dragMode() == QGraphicsView.DragMode.NoDrag
                and (event.position().toPoint() - self._press).manhattanLength() >= QApplication.startDragDistance()):
            self._press = None
            self.start_drag()
            return
        super().mouseMoveEvent(event)

    def start_drag(self) -> None:
        image, path = self.drag_payload
        if image is None:
            return
        drag = QDrag(self)
        drag.setMimeData(image_mime(image, path))
        drag.setPixmap(QPixmap.fromImage(image).scaled(128, 128, Qt.AspectRatioMode.KeepAspectRatio,
                                                       Qt.TransformationMode.SmoothTransformation))
        drag.exec(Qt.DropAction.CopyAction)


class ResultView(QWidget):
    """Shows the running job's preview, then its images; Save As, Copy, Show in folder, drag out."""

    message = Signal(str)  # a status line for the window
    upscale_requested = Signal(object)  # ShownImage

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = ZoomView()
        self.images: list[ShownImage] = []
        self.index = 0
        self.placeholder = QLabel("Your images appear here.\nType a prompt and press Ctrl+Enter.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.caption = QLabel()
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.prev_button = QToolButton()
        self.prev_button.setText("<")
        self.prev_button.setToolTip("Previous image")
        self.next_button = QToolButton()
        self.next_button.setText(">")
        self.next_button.setToolTip("Next image")
        self.counter = QLabel()
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Fit the image to the window")
        self.actual_button = QToolButton()
        self.actual_button.setText("100%")
        self.actual_button.setToolTip("Actual pixels (scroll to zoom)")
        self.save_button = QPushButton("Save As...")
        self.copy_button = QPushButton("Copy")
        self.reveal_button = QPushButton("Show in Folder")
        self.reveal_button.setToolTip("Show the image file in the file manager")
        self.upscale_button = QPushButton("Upscale...")
        self.upscale_button.setToolTip("Enlarge this image 2x or 4x (a new history entry)")
        self.upscale_button.clicked.connect(lambda: self.current() and self.upscale_requested.emit(self.current()))
        self.prev_button.clicked.connect(lambda: self.show_index(self.index - 1))
        self.next_button.clicked.connect(lambda: self.show_index(self.index + 1))
        self.fit_button.clicked.connect(self.view.fit_to_window)
        self.actual_button.clicked.connect(self.view.actual_size)
        self.save_button.clicked.connect(self.save_as)
        self.copy_button.clicked.connect(self.copy)
        self.reveal_button.clicked.connect(self.reveal)

        bar = QHBoxLayout()
        for w in (self.prev_button, self.counter, self.next_button, self.fit_button, self.actual_button):
            bar.addWidget(w)
        bar.addStretch(1)
        for w in (self.upscale_button, self.save_button, self.copy_button, self.reveal_button):
            bar.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.placeholder, 1)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.caption)
        layout.addLayout(bar)
        self._update_controls()

    # -- states ---------------------------------------------------------------------------
    def start_job(self, label: str) -> None:
        self.progress.setRange(0, 0)  # busy until the first step (model loading, encoding)
        self.progress.setFormat(label)
        self.progress.show()

    def set_progress(self, done: int, total: int, elapsed: float) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        rate = done / elapsed if elapsed > 0 else 0.0
        self.progress.setFormat(f"Step {done}/{total}   {rate:.1f} it/s   {elapsed:.1f} s   (Esc cancels)")
        self.progress.show()

    def set_preview(self, image: QImage) -> None:
        self.placeholder.hide()
        self.view.show()
        # The preview is latent-sized (1/8): scale it smoothly to the result's size.
        self.view.set_image(image, smooth=True)
        self.view.drag_payload = (None, None)
        self.caption.setText("Live preview")

    def end_job(self) -> None:
        self.progress.hide()

    def show_images(self, images: Sequence[ShownImage]) -> None:
        self.images = list(images)
        self.show_index(0)

    def show_entry(self, entry: Any) -> None:
        """Show a history entry's image (decoded off the UI thread)."""
        path = Path(entry.path)

        def loaded(image: QImage) -> None:
            if image.isNull():
                self.message.emit(f"Cannot open {path.name}: the file is missing or damaged.")
                return
            self.show_images([ShownImage(image, path, entry, _caption(entry))])

        run_in_background(lambda: QImage(str(path)), loaded)

    def show_index(self, index: int) -> None:
        if not self.images:
            self.view.clear()
            self.view.hide()
            self.placeholder.show()
            self.caption.setText("")
            self._update_controls()
            return
        self.index = max(0, min(index, len(self.images) - 1))
        shown = self.images[self.index]
        self.placeholder.hide()
        self.view.show()
        self.view.set_image(shown.image)
        self.view.drag_payload = (shown.image, shown.path)
        self.caption.setText(shown.caption)
        self._update_controls()

    def current(self) -> ShownImage | None:
        return self.images[self.index] if self.images else None

    def _update_controls(self) -> None:
        n = len(self.images)
        self.counter.setText(f"{self.index + 1} of {n}" if n > 1 else "")
        for w in (self.prev_button, self.next_button, self.counter):
            w.setVisible(n > 1)
        self.prev_button.setEnabled(self.index > 0)
        self.next_button.setEnabled(self.index < n - 1)
        has = n > 0
        for w in (self.save_button, self.copy_button, self.fit_button, self.actual_button):
            w.setEnabled(has)
        self.reveal_button.setEnabled(has and self.images[self.index].path is not None)
        self.upscale_button.setEnabled(has and self.images[self.index].path is not None)
        if not has:
            self.view.hide()

    # -- actions --------------------------------------------------------------------------
    def save_as(self) -> None:
        shown = self.current()
        if shown is None:
            return
        suggested = shown.path.name if shown.path else "heyim.png"
        target, _ = QFileDialog.getSaveFileName(self, "Save image as", suggested,
                                                "PNG image (*.png);;JPEG image (*.jpg *.jpeg);;WebP image (*.webp)")
        if target:
            self.save_to(Path(target))

    def save_to(self, target: Path) -> bool:
        """Write the current image to ``target``; a PNG copy keeps the settings chunk."""
        shown = self.current()
        if shown is None:
            return False
        try:
            if shown.path is not None and target.suffix.lower() in ("", ".png") and shown.path.is_file():
                shutil.copyfile(shown.path, target.with_suffix(".png"))
                saved = target.with_suffix(".png")
            else:
                saved = target if target.suffix else target.with_suffix(".png")
                if not shown.image.save(str(saved)):
                    raise OSError("the image could not be encoded or written")
        except OSError as exc:
            self.message.emit(f"Could not save {target.name}: {getattr(exc, 'strerror', None) or exc}")
            return False
        self.message.emit(f"Saved {saved}")
        return True

    def copy(self) -> None:
        shown = self.current()
        if shown is None:
            return
        QApplication.clipboard().setMimeData(image_mime(shown.image, shown.path))
        self.message.emit("Image copied to the clipboard.")

    def reveal(self) -> None:
        shown = self.current()
        if shown is not None and shown.path is not None:
            show_in_file_manager(shown.path)


def _caption(entry: Any) -> str:
    parts = [f"Seed {entry.seed}", f"{entry.width}x{entry.height}", f"{entry.steps} steps",
             f"CFG {entry.guidance:g}", entry.scheduler or "", entry.model_name or ""]
    return "   ".join(p for p in parts if p)


def entry_caption(entry: Any) -> str:
    return _caption(entry)
