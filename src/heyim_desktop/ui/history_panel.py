"""The history grid: search, favourites, reuse settings, use as input, delete, drag out."""

from __future__ import annotations

import logging
from typing import Any, Callable

from heyim_desktop.ui.history_model import ICON_SIZE, DayStartRole, EntryRole, HistoryModel, icon_grid_size
from heyim_desktop.ui.qt import (
    QAbstractItemView,
    QAction,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QModelIndex,
    QPainter,
    QPersistentModelIndex,
    QPoint,
    QPushButton,
    QSize,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)

log = logging.getLogger(__name__)


class HistoryView(QListView):
    """A grid of thumbnails with the prompt underneath.

    It is IconMode's look built on ListMode with wrapping: IconMode keeps a rectangle per
    item for free placement, which made re-filtering 10,000 entries 3-5x slower
    (bench/bench_history.py); a static grid needs none of that.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.ListMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setSpacing(0)
        self.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.setGridSize(icon_grid_size())
        self.setUniformItemSizes(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # similar prompts differ at the end
        self.setWordWrap(False)
        self.setLayoutMode(QListView.LayoutMode.Batched)  # the first screenful paints before the rest is laid out
        self.setBatchSize(300)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.setItemDelegate(ThumbnailDelegate(self))


class ThumbnailDelegate(QStyledItemDelegate):
    """Thumbnail on top, the prompt centred underneath (IconMode's look); the first image of each
    day carries the day's name as a badge, so the grid reads as groups by day."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        super().paint(painter, option, index)
        day = index.data(DayStartRole)
        if not day:
            return
        from heyim_desktop.ui.qt import QApplication, QPalette

        palette = QApplication.palette()
        metrics = painter.fontMetrics()
        rect = option.rect
        w, h = metrics.horizontalAdvance(day) + 12, metrics.height() + 4
        painter.save()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
        painter.drawRoundedRect(rect.left() + 6, rect.top() + 6, w, h, 4, 4)
        painter.setPen(palette.color(QPalette.ColorRole.HighlightedText))
        painter.drawText(rect.left() + 12, rect.top() + 6 + 2 + metrics.ascent(), day)
        painter.restore()

    def initStyleOption(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt API
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        option.decorationPosition = QStyleOptionViewItem.Position.Top
        option.decorationAlignment = Qt.AlignmentFlag.AlignHCenter
        option.displayAlignment = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop


class HistoryPanel(QWidget):
    reuse_requested = Signal(object)  # HistoryEntry
    use_as_input_requested = Signal(object)  # HistoryEntry
    open_requested = Signal(object)  # HistoryEntry: show it in the result view
    copy_requested = Signal(object)
    reveal_requested = Signal(object)
    upscale_requested = Signal(object)  # HistoryEntry
    inpaint_requested = Signal(object)  # HistoryEntry: "Edit / Inpaint..."
    deleted = Signal(list)  # ids
    message = Signal(str)

    def __init__(self, store: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        #: Asks before deleting; tests and the window may replace it. Returns True to delete.
        self.confirm_delete: Callable[[int], bool] = self._ask_delete
        self.model = HistoryModel(store, self)
        self._opened_id: int | None = None
        self.view = HistoryView()
        self.view.setModel(self.model)

        self.search = QLineEdit()
        self.search.setPlaceholderText("Search prompts (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.favourites = QCheckBox("Favourites")
        self.favourites.setToolTip("Show only favourites")
        self.count_label = QLabel()
        self.day_jump = QComboBox()
        self.day_jump.setAccessibleName("Jump to day")
        self.day_jump.setToolTip("Jump to the images of a day")
        self.day_jump.activated.connect(self._jump_to_day)
        self.reuse_button = QPushButton("Reuse Settings")
        self.reuse_button.setToolTip("Load this image's prompt and settings (or double-click it)")
        self.input_button = QPushButton("Use as Input")
        self.input_button.setToolTip("Start image-to-image from this image")
        self.favourite_button = QPushButton("Favourite")
        self.favourite_button.setCheckable(True)
        self.delete_button = QPushButton("Delete...")

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)  # search as you type, once per pause
        self._search_timer.timeout.connect(self._apply_filter)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.search.returnPressed.connect(lambda: self._apply_filter(forced=True))
        self.favourites.toggled.connect(lambda _on: self._apply_filter(forced=True))
        self.model.count_changed.connect(self._show_count)
        self.view.doubleClicked.connect(lambda idx: self._emit_for(idx, self.reuse_requested))
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        self.model.modelReset.connect(self._selection_changed)
        self.reuse_button.clicked.connect(lambda: self._emit_current(self.reuse_requested))
        self.input_button.clicked.connect(lambda: self._emit_current(self.use_as_input_requested))
        self.favourite_button.clicked.connect(self.toggle_favourite)
        self.delete_button.clicked.connect(self.delete_selected)

        top = QHBoxLayout()
        top.addWidget(QLabel("<b>History</b>"))
        top.addWidget(self.search, 1)
        top.addWidget(self.day_jump)
        top.addWidget(self.favourites)
        top.addWidget(self.count_label)
        actions = QHBoxLayout()
        for b in (self.reuse_button, self.input_button, self.favourite_button):
            actions.addWidget(b)
        actions.addStretch(1)
        actions.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.no_matches = QLabel()
        self.no_matches.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_matches.setWordWrap(True)
        self.no_matches.setEnabled(False)  # greyed by the palette in any theme
        self.no_matches.hide()
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.no_matches, 1)
        layout.addLayout(actions)

        self.delete_action = QAction("Delete", self)
        self.delete_action.setShortcut(Qt.Key.Key_Delete)
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(self.delete_selected)
        self.view.addAction(self.delete_action)
        self._show_count(self.model.rowCount())
        self._selection_changed()

    def close_model(self) -> None:
        self.model.close()

    # -- filter ---------------------------------------------------------------------------
    def _apply_filter(self, forced: bool = False) -> None:
        self._search_timer.stop()
        text = self.search.text().strip()
        # One letter matches most of a big history: wait for a second letter (or Enter).
        if len(text) == 1 and not forced:
            return
        self.model.set_filter(text, self.favourites.isChecked())

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def _show_count(self, n: int) -> None:
        what = "favourite" if self.favourites.isChecked() else "image"
        text = self.model.query
        if text:
            self.count_label.setText(f"{n} found")
        else:
            self.count_label.setText(f"{n} {what}{'' if n == 1 else 's'}")
        empty_reason = ""
        if n == 0 and text:
            where = " among favourites" if self.model.favourites_only else ""
            empty_reason = f"No images match \u201c{text}\u201d{where}.\nClear the search to see every image."
        elif n == 0 and self.model.favourites_only:
            empty_reason = "No favourites yet.\nStar an image with Favourite to find it here."
        self._fill_days()
        self.no_matches.setText(empty_reason)
        self.no_matches.setVisible(bool(empty_reason))
        self.view.setVisible(not empty_reason)

    def _fill_days(self) -> None:
        self.day_jump.blockSignals(True)
        self.day_jump.clear()
        self.day_jump.addItem("All days", None)
        for first, day, n in self.model.day_groups:
            self.day_jump.addItem(f"{self.model.day_name(day)} ({n})", first)
        self.day_jump.blockSignals(False)
        self.day_jump.setEnabled(len(self.model.day_groups) > 1)

    def _jump_to_day(self, index: int) -> None:
        row = self.day_jump.itemData(index)
        if isinstance(row, int):
            self.select_row(row)
            self.view.scrollTo(self.model.index(row), QListView.ScrollHint.PositionAtTop)

    # -- selection ------------------------------------------------------------------------
    def selected_entries(self) -> list[Any]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedIndexes()})
        return [e for e in (self.model.entry_at(r) for r in rows) if e is not None]

    def current_entry(self) -> Any | None:
        idx = self.view.currentIndex()
        if idx.isValid() and self.view.selectionModel().isSelected(idx):
            return self.model.entry_at(idx.row())
        entries = self.selected_entries()
        return entries[0] if entries else None

    def _selection_changed(self) -> None:
        entry = self.current_entry()
        has = entry is not None
        for b in (self.reuse_button, self.input_button, self.favourite_button, self.delete_button):
            b.setEnabled(has)
        self.favourite_button.setChecked(bool(entry and entry.favourite))
        # Only a change of selection opens an image: inserting rows or a reset re-announces the
        # same selection, which must not replace a newer image in the result view.
        entry_id = int(entry.id) if entry is not None else None
        if entry is not None and entry_id != self._opened_id:
            self.open_requested.emit(entry)
        self._opened_id = entry_id

    def select_row(self, row: int) -> None:
        idx = self.model.index(row)
        self.view.setCurrentIndex(idx)

    def select_entry(self, entry_id: int) -> None:
        """Select ``entry_id`` if it is in the grid (the full-screen viewer follows it here)."""
        row = self.model.row_of(int(entry_id))
        if row is not None:
            self._opened_id = int(entry_id)  # already on screen in the viewer
            self.select_row(row)
            self.view.scrollTo(self.model.index(row))

    def _emit_for(self, index: QModelIndex, signal: Any) -> None:
        entry = index.data(EntryRole) if index.isValid() else None
        if entry is not None:
            signal.emit(entry)

    def _emit_current(self, signal: Any) -> None:
        entry = self.current_entry()
        if entry is not None:
            signal.emit(entry)

    # -- actions --------------------------------------------------------------------------
    def toggle_favourite(self) -> None:
        entries = self.selected_entries()
        if not entries:
            return
        on = not all(e.favourite for e in entries)
        for e in entries:
            self.store.set_favourite(e.id, on)
            self.model.update_entry(e.id)
        if self.favourites.isChecked() and not on:
            self.model.refresh()
        self._selection_changed()

    def delete_selected(self) -> None:
        entries = self.selected_entries()
        if not entries or not self.confirm_delete(len(entries)):
            return
        ids = [int(e.id) for e in entries]
        from heyim_desktop.core.errors import UserFacingError
        from heyim_desktop.ui.generate import plural
        from heyim_desktop.ui.reveal import TrashBin

        trash = TrashBin()
        try:
            self.store.delete(ids, remove_file=trash)
        except (UserFacingError, OSError) as exc:
            self.message.emit(str(exc))
            self.model.refresh()
            self.deleted.emit(ids)
            return
        self.model.remove_ids(ids)
        self.deleted.emit(ids)
        where = "moved to the Trash" if not trash.unlinked else "deleted (this desktop has no Trash)"
        self.message.emit(f"{plural(len(ids), 'image')} {where}.")

    def _ask_delete(self, n: int) -> bool:
        from heyim_desktop.ui.qt import QMessageBox

        what = "this image" if n == 1 else f"these {n} images"
        answer = QMessageBox.question(
            self, "Delete from history",
            f"Delete {what} from history? The image file{'s go' if n != 1 else ' goes'} to the Trash.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def _context_menu(self, pos: QPoint) -> None:
        idx = self.view.indexAt(pos)
        if not idx.isValid():
            return
        if not self.view.selectionModel().isSelected(idx):
            self.view.setCurrentIndex(idx)
        entry = self.current_entry()
        if entry is None:
            return
        menu = QMenu(self)
        menu.addAction("Reuse Settings", lambda: self.reuse_requested.emit(entry))
        menu.addAction("Use as Input", lambda: self.use_as_input_requested.emit(entry))
        menu.addAction("Edit / Inpaint...", lambda: self.inpaint_requested.emit(entry))
        menu.addAction("Upscale...", lambda: self.upscale_requested.emit(entry))
        menu.addAction("Unfavourite" if entry.favourite else "Favourite", self.toggle_favourite)
        menu.addSeparator()
        menu.addAction("Copy Image", lambda: self.copy_requested.emit(entry))
        menu.addAction("Show in Folder", lambda: self.reveal_requested.emit(entry))
        menu.addSeparator()
        menu.addAction("Delete...", self.delete_selected)
        menu.popup(self.view.viewport().mapToGlobal(pos))
