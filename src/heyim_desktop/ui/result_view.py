"""The result view: the live preview while denoising, then the job's images, and what to do with one.

The actions (Save As, Copy, Show in Folder, Full Screen) always act on the image on screen:
they are disabled while a live preview shows, and a deleted image leaves the view.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from heyim_desktop.ui.glyphs import FULL_SCREEN, symbol
from heyim_desktop.ui.qt import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QIcon,
    QImage,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPixmap,
    QPoint,
    QProgressBar,
    QSize,
    QSizePolicy,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.reveal import show_in_file_manager
from heyim_desktop.ui.tasks import run_in_background
from heyim_desktop.ui.zoom_view import ZoomView, image_mime

log = logging.getLogger(__name__)

__all__ = ["ResultView", "ShownImage", "entry_caption", "image_mime", "show_in_file_manager"]

STRIP_ICON = 72


@dataclass(frozen=True)
class ShownImage:
    image: QImage
    path: Path | None = None
    entry: Any = None  # HistoryEntry when the image is in history
    caption: str = ""

    @property
    def entry_id(self) -> int | None:
        return int(self.entry.id) if self.entry is not None and hasattr(self.entry, "id") else None


def _retain_when_hidden(widget: QWidget) -> None:
    """Hiding ``widget`` keeps its space, so the controls around it stay where they are."""
    policy = widget.sizePolicy()
    policy.setRetainSizeWhenHidden(True)
    widget.setSizePolicy(policy)


class ResultView(QWidget):
    """Shows the running job's preview, then its images (a strip to compare a batch); actions on the shown one."""

    message = Signal(str)  # a status line for the window
    #: (what, path): the desktop could not open ``path``; the window shows it to copy.
    location_failed = Signal(str, object)
    #: The image on screen changed: a ShownImage, or None (preview, nothing, deleted).
    shown_changed = Signal(object)
    full_screen_requested = Signal()
    upscale_requested = Signal(object)  # ShownImage
    inpaint_requested = Signal(object)  # ShownImage: "Edit / Inpaint..."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = ZoomView()
        self.images: list[ShownImage] = []
        self.index = 0
        self.previewing = False
        self._load_token = 0  # newer shows win over slower background decodes
        self.placeholder = QLabel("Your images appear here.\nType a prompt and press Ctrl+Enter.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        _retain_when_hidden(self.progress)
        self.progress.hide()
        self.caption = QLabel()
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.strip = QListWidget()
        self.strip.setViewMode(QListView.ViewMode.IconMode)
        self.strip.setFlow(QListView.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setMovement(QListView.Movement.Static)
        self.strip.setIconSize(QSize(STRIP_ICON, STRIP_ICON))
        self.strip.setFixedHeight(STRIP_ICON + 26)
        self.strip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.strip.setToolTip("Every image of this job: click one to see it large")
        self.strip.currentRowChanged.connect(self._strip_row)
        self.strip.hide()

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
        self.zoom_label = QLabel()
        self.zoom_label.setToolTip("Zoom level")
        self.zoom_label.setMinimumWidth(self.zoom_label.fontMetrics().horizontalAdvance("Fit (100%)"))
        self.full_button = QToolButton()
        self.full_button.setText(symbol(self.full_button, FULL_SCREEN, "Full"))
        self.full_button.setAccessibleName("Full screen")
        self.full_button.setToolTip("Show the image full screen; arrow keys step through history (F11)")
        self.save_button = QToolButton()
        self.save_button.setText("Save As...")
        self.copy_button = QToolButton()
        self.copy_button.setText("Copy")
        self.reveal_button = QToolButton()
        # Short, so the bar fits a 1024-wide window beside Upscale; the tooltip and name say it in full.
        self.reveal_button.setText("Reveal")
        self.reveal_button.setAccessibleName("Show in Folder")
        self.reveal_button.setToolTip("Show the image file in the file manager")
        self.upscale_button = QToolButton()
        self.upscale_button.setText("Upscale...")
        self.upscale_button.setToolTip("Enlarge this image 2x or 4x (a new history entry)")
        self.upscale_button.clicked.connect(self._upscale_clicked)
        # The bar is full at a 1024-wide window: "Edit / Inpaint..." is on the image's context menu
        # (and in the Edit menu).
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.prev_button.clicked.connect(lambda: self.show_index(self.index - 1))
        self.next_button.clicked.connect(lambda: self.show_index(self.index + 1))
        self.fit_button.clicked.connect(self.view.fit_to_window)
        self.actual_button.clicked.connect(self.view.actual_size)
        self.view.zoom_changed.connect(lambda _z: self.zoom_label.setText(self.view.zoom_text()
                                                                          if self.view.has_image() else ""))
        self.full_button.clicked.connect(self.full_screen_requested)
        self.save_button.clicked.connect(self.save_as)
        self.copy_button.clicked.connect(self.copy)
        self.reveal_button.clicked.connect(self.reveal)

        # A batch brings its own row (strip, previous/next): the bar below never changes.
        self.batch_row = QWidget()
        batch = QHBoxLayout(self.batch_row)
        batch.setContentsMargins(0, 0, 0, 0)
        batch.addWidget(self.prev_button)
        batch.addWidget(self.strip, 1)
        batch.addWidget(self.next_button)
        batch.addWidget(self.counter)
        self.batch_row.hide()
        bar = QHBoxLayout()
        for w in (self.fit_button, self.actual_button, self.zoom_label, self.full_button):
            bar.addWidget(w)
        bar.addStretch(1)
        for w in (self.upscale_button, self.save_button, self.copy_button, self.reveal_button):
            bar.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.placeholder, 1)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.batch_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.caption)
        layout.addLayout(bar)
        self._update_controls()

    # -- states ---------------------------------------------------------------------------
    def start_job(self, label: str) -> None:
        self.progress.setRange(0, 0)  # busy until the first step (model loading, encoding)
        self.progress.setFormat(label)
        self.progress.show()

    def set_progress(self, done: int, total: int, elapsed: float, label: str | None = None) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        rate = done / elapsed if elapsed > 0 else 0.0
        what = label or f"Step {done}/{total}"
        self.progress.setFormat(f"{what}   {rate:.1f} it/s   {elapsed:.1f} s   (Esc cancels)")
        self.progress.show()

    def set_preview(self, image: QImage) -> None:
        self.placeholder.hide()
        self.view.show()
        # The preview is latent-sized (1/8): scale it smoothly to the result's size.
        self.view.set_image(image, smooth=True)
        self.view.drag_payload = (None, None)
        self.caption.setText("Live preview")
        if not self.previewing:
            self.previewing = True
            self._update_controls()
            self.shown_changed.emit(None)

    def end_job(self) -> None:
        """The job is over; after a cancel or failure the preview gives way to what was shown before."""
        self.progress.hide()
        if self.previewing:
            self.previewing = False
            self.show_index(self.index)

    def show_images(self, images: Sequence[ShownImage]) -> None:
        self._load_token += 1
        self.previewing = False
        self.images = list(images)
        self._fill_strip()
        self.show_index(0)

    def show_entry(self, entry: Any) -> None:
        """Show a history entry's image (decoded off the UI thread); a newer show wins."""
        path = Path(entry.path)
        self._load_token += 1
        token = self._load_token

        def loaded(image: QImage) -> None:
            if token != self._load_token or self.previewing:
                return  # something newer is on screen (a finished job, another selection)
            if image.isNull():
                self.message.emit(f"Cannot open {path.name}: the file is missing or damaged.")
                return
            self.show_images([ShownImage(image, path, entry, entry_caption(entry))])

        run_in_background(lambda: QImage(str(path)), loaded)

    def remove_entries(self, ids: Sequence[int]) -> None:
        """History entries were deleted: their images leave the view (the next one shows)."""
        gone = {int(i) for i in ids}
        keep = [s for s in self.images if s.entry_id not in gone]
        if len(keep) == len(self.images):
            return
        self._load_token += 1
        index = min(self.index, len(keep) - 1)
        self.images = keep
        self._fill_strip()
        self.show_index(max(0, index))

    def clear(self) -> None:
        self._load_token += 1
        self.images = []
        self._fill_strip()
        self.show_index(0)

    def show_index(self, index: int) -> None:
        if self.previewing:
            return
        if not self.images:
            self.index = 0
            self.view.clear()
            self.view.hide()
            self.placeholder.show()
            self.caption.setText("")
            self._update_controls()
            self.shown_changed.emit(None)
            return
        self.index = max(0, min(index, len(self.images) - 1))
        shown = self.images[self.index]
        self.placeholder.hide()
        self.view.show()
        self.view.set_image(shown.image)
        self.view.drag_payload = (shown.image, shown.path)
        self.caption.setText(shown.caption)
        if self.strip.currentRow() != self.index:
            self.strip.blockSignals(True)
            self.strip.setCurrentRow(self.index)
            self.strip.blockSignals(False)
        self._update_controls()
        self.shown_changed.emit(shown)

    def current(self) -> ShownImage | None:
        """The image on screen, or None while a preview (or nothing) shows."""
        if self.previewing or not self.images:
            return None
        return self.images[self.index]

    def _fill_strip(self) -> None:
        self.strip.blockSignals(True)
        self.strip.clear()
        for n, shown in enumerate(self.images, 1):
            icon = QIcon(QPixmap.fromImage(shown.image.scaled(
                STRIP_ICON, STRIP_ICON, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)))
            item = QListWidgetItem(icon, str(n))
            item.setToolTip(shown.caption)
            self.strip.addItem(item)
        self.strip.blockSignals(False)
        self.strip.setVisible(len(self.images) > 1)
        self.batch_row.setVisible(len(self.images) > 1)

    def _strip_row(self, row: int) -> None:
        if row >= 0 and row != self.index:
            self.show_index(row)

    def _update_controls(self) -> None:
        n = len(self.images) if not self.previewing else 0
        self.counter.setText(f"{self.index + 1} of {n}" if n > 1 else "")
        for w in (self.prev_button, self.next_button, self.counter):
            w.setVisible(n > 1)
        self.prev_button.setEnabled(self.index > 0)
        self.next_button.setEnabled(self.index < n - 1)
        has = self.current() is not None
        for w in (self.save_button, self.copy_button, self.full_button):
            w.setEnabled(has)
        for w in (self.fit_button, self.actual_button):
            w.setEnabled(has or self.previewing)
        shown = self.current()
        self.reveal_button.setEnabled(shown is not None and shown.path is not None)
        self.upscale_button.setEnabled(shown is not None and shown.path is not None)
        self.zoom_label.setText(self.view.zoom_text() if (has or self.previewing) else "")
        if not has and not self.previewing:
            self.view.hide()

    # -- actions --------------------------------------------------------------------------
    def inpaint_shown(self) -> None:
        """Edit / Inpaint the shown image (it becomes the input image, the mask editor opens)."""
        shown = self.current()
        if shown is None:
            self.message.emit("No image to inpaint.")
            return
        self.inpaint_requested.emit(shown)

    def context_menu(self) -> QMenu | None:
        """The shown image's menu (None while nothing is shown)."""
        shown = self.current()
        if shown is None:
            return None
        menu = QMenu(self)
        menu.addAction("Edit / Inpaint...", self.inpaint_shown)
        upscale = menu.addAction("Upscale...", self._upscale_clicked)
        upscale.setEnabled(shown.path is not None)
        menu.addSeparator()
        menu.addAction("Copy Image", self.copy)
        menu.addAction("Save As...", self.save_as)
        reveal = menu.addAction("Show in Folder", self.reveal)
        reveal.setEnabled(shown.path is not None)
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        menu = self.context_menu()
        if menu is not None:
            menu.popup(self.view.viewport().mapToGlobal(pos))

    def _upscale_clicked(self) -> None:
        shown = self.current()
        if shown is not None:
            self.upscale_requested.emit(shown)

    def save_as(self) -> None:
        shown = self.current()
        if shown is None:
            return
        from heyim_desktop.ui.dialogs import start_folder

        suggested = str(start_folder("save") / (shown.path.name if shown.path else "heyim.png"))
        target, _ = QFileDialog.getSaveFileName(self, "Save image as", suggested,
                                                "PNG image (*.png);;JPEG image (*.jpg *.jpeg);;WebP image (*.webp)")
        if target:
            from heyim_desktop.ui.dialogs import remember_folder

            remember_folder("save", Path(target).parent)
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
        if shown is not None and shown.path is not None and not show_in_file_manager(shown.path):
            self.location_failed.emit("the image", shown.path)


def entry_caption(entry: Any) -> str:
    parts = [f"Seed {entry.seed}", f"{entry.width}x{entry.height}", f"{entry.steps} steps",
             f"CFG {entry.guidance:g}", entry.scheduler or "", entry.model_name or ""]
    return "   ".join(p for p in parts if p)
