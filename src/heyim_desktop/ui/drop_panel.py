"""The image-to-image input: drop a file, a history thumbnail, or paste from the clipboard.

Files are decoded with :func:`heyim_desktop.core.images.load_image` (size-checked before
decoding, so a decompression bomb is refused) on a background thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heyim_desktop.ui.qt import (
    QColor,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QImage,
    QLabel,
    QMimeData,
    QPainter,
    QPalette,
    QPixmap,
    QPushButton,
    QResizeEvent,
    QSizePolicy,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.tasks import pil_to_qimage, qimage_to_pil, run_in_background

log = logging.getLogger(__name__)

#: Marks a drag that started in HeyIm's own history grid (its URLs are history PNGs).
HISTORY_MIME = "application/x-heyim-history-ids"
PREVIEW_SIZE = 192
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"


@dataclass(frozen=True)
class DroppedImage:
    """A decoded input. ``parameters`` is set when a file carries generation settings."""

    image: Any  # PIL.Image.Image, RGB
    preview: QImage
    label: str
    path: Path | None = None
    parameters: Any = None  # core.metadata.ImageParameters | None
    from_history: bool = False


def _decode_file(path: Path, from_history: bool) -> DroppedImage:
    from heyim_desktop.core.images import load_image
    from heyim_desktop.core.metadata import read_parameters

    image = load_image(path)
    params = None
    try:
        params = read_parameters(path)
    except Exception:  # noqa: BLE001 - metadata is a bonus; the image itself is fine
        log.info("cannot read parameters of %s", path, exc_info=True)
    return DroppedImage(image, _preview(image), path.name, path, params, from_history)


def _decode_qimage(qimage: QImage, label: str) -> DroppedImage:
    from heyim_desktop.core.errors import ImageError
    from heyim_desktop.core.images import MAX_INPUT_PIXELS

    if qimage.width() * qimage.height() > MAX_INPUT_PIXELS:
        raise ImageError(f"{label} is {qimage.width()}x{qimage.height()} pixels, too large.")
    image = qimage_to_pil(qimage)
    return DroppedImage(image, _preview(image), label)


def _preview(image: Any) -> QImage:
    small = image.copy()
    small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    preview: QImage = pil_to_qimage(small)
    return preview


def _overlay(image: Any, mask: Any) -> Any:
    """The image with the mask shown in translucent red, for the panel's preview."""
    from PIL import Image

    red = Image.new("RGB", image.size, (255, 40, 40))
    alpha = mask.convert("L").resize(image.size).point(lambda v: v // 2)
    return Image.composite(red, image.convert("RGB"), alpha)


def local_files(mime: QMimeData) -> list[Path]:
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]


def can_accept(mime: QMimeData) -> bool:
    return bool(local_files(mime)) or mime.hasImage()


class FittedPicture(QLabel):
    """Shows a picture whole, scaled to fit with its aspect kept, and the crop frame a job will use."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source: QImage | None = None
        self.target: tuple[int, int] | None = None

    def set_source(self, image: QImage | None) -> None:
        self.source = image
        self._render()

    def set_target(self, size: tuple[int, int] | None) -> None:
        self.target = size
        self._render()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._render()

    def shown_size(self) -> tuple[int, int]:
        pix = self.pixmap()
        return (pix.width(), pix.height()) if pix is not None and not pix.isNull() else (0, 0)

    def _render(self) -> None:
        if self.source is None or self.source.isNull():
            return
        room = self.contentsRect().size()
        if room.width() < 8 or room.height() < 8:
            return
        pix = QPixmap.fromImage(self.source).scaled(room, Qt.AspectRatioMode.KeepAspectRatio,
                                                    Qt.TransformationMode.SmoothTransformation)
        if self.target is not None:
            self._draw_crop(pix)
        self.setPixmap(pix)

    def _draw_crop(self, pix: QPixmap) -> None:
        """Dim what a centre crop to the target shape cuts away (core.images.fit_to_size)."""
        tw, th = self.target or (1, 1)
        pw, ph = pix.width(), pix.height()
        if pw == 0 or ph == 0 or abs((pw / ph) / (tw / th) - 1) < 0.02:
            return
        if pw / ph > tw / th:
            keep_w, keep_h = round(ph * tw / th), ph
        else:
            keep_w, keep_h = pw, round(pw * th / tw)
        x, y = (pw - keep_w) // 2, (ph - keep_h) // 2
        p = QPainter(pix)
        shade = QColor(0, 0, 0, 140)
        p.fillRect(0, 0, pw, y, shade)
        p.fillRect(0, y + keep_h, pw, ph - y - keep_h, shade)
        p.fillRect(0, y, x, keep_h, shade)
        p.fillRect(x + keep_w, y, pw - x - keep_w, keep_h, shade)
        p.setPen(QColor(255, 255, 255, 220))
        p.drawRect(x, y, keep_w - 1, keep_h - 1)
        p.end()


class DropPanel(QFrame):
    """Shows the input image (or how to add one) and emits what was dropped once decoded."""

    #: A file or image was decoded; the window decides (e.g. asks about its settings).
    decoded = Signal(object)  # DroppedImage
    #: The input changed: None when cleared.
    input_changed = Signal(object)
    #: Something could not be used as an image: a one-line message.
    failed = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFrameShadow(QFrame.Shadow.Sunken)
        self.current: DroppedImage | None = None
        self._pending = 0

        self.picture = FittedPicture()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(PREVIEW_SIZE // 2, PREVIEW_SIZE // 2)
        self.picture.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.picture.setWordWrap(True)
        self.caption = QLabel()
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption.setWordWrap(True)
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip("Choose an input image for image-to-image")
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Use the image on the clipboard as input")
        self.inpaint_button = QPushButton("Inpaint...")
        self.inpaint_button.setToolTip("Paint a mask over the input to repaint just that part, or extend the canvas")
        self.inpaint_button.clicked.connect(self.edit_mask)
        self.inpaint_button.setEnabled(False)
        self.clear_mask_button = QPushButton("Remove Mask")
        self.clear_mask_button.setToolTip("Back to plain image-to-image")
        self.clear_mask_button.clicked.connect(lambda: self.set_inpaint(None))
        self.clear_mask_button.setVisible(False)
        self.inpaint: Any = None  # ui.mask_editor.InpaintChoice | None
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Back to text-to-image")
        self.open_button.clicked.connect(self.choose_file)
        self.paste_button.clicked.connect(self.paste)
        self.clear_button.clicked.connect(self.clear)

        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.paste_button)
        buttons.addWidget(self.inpaint_button)
        buttons.addWidget(self.clear_mask_button)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Input image</b> (image-to-image)"))
        layout.addWidget(self.picture, 1)
        layout.addWidget(self.caption)
        layout.addLayout(buttons)
        self._show_empty()

    # -- display --------------------------------------------------------------------------
    def _show_empty(self) -> None:
        self.picture.set_source(None)
        self.picture.setPixmap(QPixmap())
        self.picture.setText("Drop an image here, or paste one,\nto start from a picture.")
        self.picture.setEnabled(False)  # the disabled palette greys the hint in any theme
        self.caption.setText("")
        self.clear_button.setEnabled(False)

    def set_input(self, dropped: DroppedImage | None) -> None:
        if dropped is not self.current:
            self.inpaint = None  # a mask belongs to the picture it was painted on
            self.clear_mask_button.setVisible(False)
        self.current = dropped
        self.inpaint_button.setEnabled(dropped is not None)
        if dropped is None:
            self._show_empty()
        else:
            self.picture.setEnabled(True)
            self.picture.setText("")
            if self.inpaint is not None:
                self.picture.set_source(_preview(_overlay(dropped.image, self.inpaint.mask)))
            else:
                self.picture.set_source(dropped.preview)
            self.caption.setText(self._caption_text())
            self.clear_button.setEnabled(True)
        self.input_changed.emit(dropped)

    def _caption_text(self) -> str:
        dropped = self.current
        if dropped is None:
            return ""
        w, h = dropped.image.size
        caption = f"{dropped.label}  ({w} x {h})"
        if self.inpaint is not None:
            parts = []
            if self.inpaint.painted_fraction() > 0:
                parts.append(f"inpaint {self.inpaint.painted_fraction():.0%} of it")
            if self.inpaint.extend:
                parts.append("extend by {}, {}, {}, {} px".format(*self.inpaint.extend))
            caption += " - " + ", ".join(parts)
        return caption

    def clear(self) -> None:
        self.set_input(None)

    def set_target_size(self, width: int, height: int) -> None:
        """The job's size: the preview marks the part of the input a centre crop keeps."""
        self.picture.set_target((width, height))

    def set_highlight(self, on: bool) -> None:
        """A visible drop target while something droppable is dragged over the window."""
        self.setProperty("dropTarget", on)
        self.setFrameShadow(QFrame.Shadow.Raised if on else QFrame.Shadow.Sunken)
        self.setLineWidth(3 if on else 1)
        self.setBackgroundRole(QPalette.ColorRole.Highlight if on else QPalette.ColorRole.Window)
        self.setAutoFillBackground(on)
        if on:
            self.caption.setText("Drop to use as the input image")
        else:
            self._restore_caption()

    def _restore_caption(self) -> None:
        self.caption.setText(self._caption_text())

    # -- inpainting ----------------------------------------------------------------------
    def edit_mask(self) -> None:
        """Open the mask editor on the input image (also reached from the result and history)."""
        from heyim_desktop.ui.mask_editor import InpaintDialog

        if self.current is None:
            return
        dialog = InpaintDialog(self.current.image, self.inpaint, self.window())
        if dialog.exec():
            self.set_inpaint(dialog.choice())

    def set_inpaint(self, choice: Any) -> None:
        self.inpaint = choice
        self.clear_mask_button.setVisible(choice is not None)
        self.set_input(self.current)

    def edit_fields(self) -> dict[str, Any]:
        """The request's inpainting and outpainting fields for the current mask (empty without one)."""
        if self.inpaint is None or self.current is None:
            return {}
        fields: dict[str, Any] = {}
        if self.inpaint.painted_fraction() > 0:
            fields["inpaint"] = self.inpaint.spec()
        extend = self.inpaint.extend_value()
        if extend is not None:
            fields["extend"] = extend
        return fields

    @property
    def image(self) -> Any | None:
        return self.current.image if self.current else None

    @property
    def busy(self) -> bool:
        return self._pending > 0

    # -- sources --------------------------------------------------------------------------
    def load_file(self, path: Path, from_history: bool = False, *, then_edit: bool = False) -> None:
        """Decode ``path`` off the UI thread; with ``then_edit``, open the mask editor on it once it is the input."""
        self._start()
        after = self.edit_mask if then_edit else None
        run_in_background(lambda: _decode_file(path, from_history), lambda d: self._decoded(d, after), self._failed)

    def load_qimage(self, image: QImage, label: str = "Pasted image", *, then_edit: bool = False) -> None:
        if image.isNull():
            self.failed.emit("The clipboard has no image to paste.")
            return
        self._start()
        after = self.edit_mask if then_edit else None
        run_in_background(lambda: _decode_qimage(image, label), lambda d: self._decoded(d, after), self._failed)

    def load_edit(self, source: Path, mask: Path, options: dict[str, Any], done: Any = None) -> None:
        """An inpainted image's kept input picture and mask back as the input, with its options
        (``InpaintChoice`` fields: blur, invert, fill, only_masked, padding, keep_unmasked, extend);
        ``done`` is called once both are in place."""
        self._start()

        def decode() -> tuple[DroppedImage, Any]:
            from dataclasses import replace

            from heyim_desktop.core.images import fit_to_size, load_mask

            dropped = _decode_file(source, True)
            dropped = replace(dropped, label="Kept input")  # short: the caption adds size and mask
            picture = load_mask(mask)
            if picture.size != dropped.image.size:  # fitted to the picture as a job fits it
                picture = fit_to_size(picture, *dropped.image.size)
            return dropped, picture

        def finish(decoded: tuple[DroppedImage, Any]) -> None:
            from heyim_desktop.ui.mask_editor import InpaintChoice

            dropped, picture = decoded

            def restore() -> None:
                self.set_inpaint(InpaintChoice(mask=picture, **options))
                if done is not None:
                    done()

            self._decoded(dropped, restore)

        run_in_background(decode, finish, self._failed)

    def load_mime(self, mime: QMimeData, label: str = "Dropped image") -> bool:
        """Use a drop or the clipboard: the first local file, else inline image data."""
        files = local_files(mime)
        if files:
            if len(files) > 1:
                log.info("%d files dropped; using the first", len(files))
            self.load_file(files[0], from_history=mime.hasFormat(HISTORY_MIME))
            return True
        if mime.hasImage():
            self.load_qimage(QImage(mime.imageData()), label)
            return True
        return False

    def paste(self) -> None:
        from heyim_desktop.ui.qt import QGuiApplication

        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not self.load_mime(mime, "Pasted image"):
            self.failed.emit("The clipboard holds no image or image file.")

    def choose_file(self) -> None:
        from heyim_desktop.ui.dialogs import remember_folder, start_folder

        path, _ = QFileDialog.getOpenFileName(self, "Choose an input image", str(start_folder("image")), IMAGE_FILTER)
        if path:
            remember_folder("image", Path(path).parent)
            self.load_file(Path(path))

    def _start(self) -> None:
        self._pending += 1
        self.caption.setText("Reading the image...")
        self.busy_changed.emit(True)

    def _end(self) -> None:
        self._pending = max(0, self._pending - 1)
        if self._pending == 0:
            self.busy_changed.emit(False)

    def _decoded(self, dropped: DroppedImage, after: Any = None) -> None:
        self._end()
        self.set_input(self.current)  # restore the caption
        self.decoded.emit(dropped)
        if after is not None and self.current is dropped:  # the window took it as the input
            after()

    def _failed(self, exc: BaseException) -> None:
        from heyim_desktop.core.errors import UserFacingError

        self._end()
        self.set_input(self.current)
        if isinstance(exc, UserFacingError):
            self.failed.emit(str(exc))
        else:
            log.error("reading an input image failed", exc_info=exc)
            self.failed.emit(f"The image could not be read ({type(exc).__name__}: {exc}).")

    # -- drag and drop --------------------------------------------------------------------
    # Always a copy: after a "move" drop a file manager may delete the source file.
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if can_accept(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self.set_highlight(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        if can_accept(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 - Qt override
        self.set_highlight(False)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        self.set_highlight(False)
        if self.load_mime(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()
