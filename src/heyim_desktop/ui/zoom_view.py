"""A zoomable image view (wheel, Fit, 100%) that drags its image out; the window and the viewer share it."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.ui.qt import (
    QApplication,
    QDrag,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QImage,
    QMimeData,
    QMouseEvent,
    QPainter,
    QPixmap,
    QPoint,
    QResizeEvent,
    Qt,
    QUrl,
    QWheelEvent,
    QWidget,
    Signal,
)

MIN_ZOOM, MAX_ZOOM = 0.05, 32.0


def image_mime(image: QImage | None, path: Path | None) -> QMimeData:
    """What a drag or a copy carries: the file (for file managers and editors) and the pixels."""
    mime = QMimeData()
    if path is not None:
        mime.setUrls([QUrl.fromLocalFile(str(path))])
    if image is not None and not image.isNull():
        mime.setImageData(image)
    return mime


def zoom_label(zoom: float, fit: bool) -> str:
    """"Fit (43%)" while fitting, else "200%"."""
    percent = f"{zoom * 100:.0f}%"
    return f"Fit ({percent})" if fit else percent


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

    @property
    def zoom(self) -> float:
        return float(self.transform().m11())

    def zoom_text(self) -> str:
        return zoom_label(self.zoom, self.fit)

    def set_image(self, image: QImage, smooth: bool = True) -> None:
        mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
        self.item.setTransformationMode(mode)
        self.item.setPixmap(QPixmap.fromImage(image))
        self.scene().setSceneRect(self.item.boundingRect())
        if self.fit:
            self.fit_to_window()

    def clear(self) -> None:
        self.item.setPixmap(QPixmap())
        self.drag_payload = (None, None)

    def has_image(self) -> bool:
        return not self.item.pixmap().isNull()

    def fit_to_window(self) -> None:
        self.fit = True
        if self.has_image():
            self.fitInView(self.item, Qt.AspectRatioMode.KeepAspectRatio)
        self._update_drag_mode()
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, factor: float) -> None:
        current = self.zoom or 1.0
        factor = max(MIN_ZOOM, min(MAX_ZOOM, current * factor)) / current
        self.fit = False
        self.scale(factor, factor)
        self._update_drag_mode()
        self.zoom_changed.emit(self.zoom)

    def actual_size(self) -> None:
        self.fit = False
        self.resetTransform()
        self._update_drag_mode()
        self.zoom_changed.emit(1.0)

    def _update_drag_mode(self) -> None:
        scrollable = self.horizontalScrollBar().maximum() > 0 or self.verticalScrollBar().maximum() > 0
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if scrollable else QGraphicsView.DragMode.NoDrag)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        if not self.has_image():
            return
        self.zoom_by(1.25 if event.angleDelta().y() > 0 else 0.8)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self.fit:
            self.fit_to_window()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._press = event.position().toPoint() if event.button() == Qt.MouseButton.LeftButton else None
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
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
