"""The history grid's model: ids up front, rows and thumbnails loaded lazily.

Opening 10,000 entries costs one ``SELECT id`` (a list of ints); rows are read from the
store in chunks as they scroll into view, and thumbnails are made and decoded on a loader
thread, newest request first, so the visible cells fill before ones scrolled past.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Sequence

from heyim_desktop.ui.drop_panel import HISTORY_MIME
from heyim_desktop.ui.qt import (
    QAbstractListModel,
    QByteArray,
    QColor,
    QImage,
    QMimeData,
    QModelIndex,
    QObject,
    QPainter,
    QPersistentModelIndex,
    QPixmap,
    QSize,
    Qt,
    QUrl,
    Signal,
)

log = logging.getLogger(__name__)

THUMB_SIZE = 256  # what the store caches (crisp on 2x screens)
ICON_SIZE = 128  # what the grid shows
ROW_CHUNK = 64  # about two screenfuls of cells
ENTRY_CACHE = 2000
PIXMAP_CACHE = 600  # ~40 MB of 128 px icons at most
EntryRole = Qt.ItemDataRole.UserRole + 1
IdRole = Qt.ItemDataRole.UserRole + 2
#: The day's name ("Today", "Yesterday", ...) on the first image of each day, else None.
DayStartRole = Qt.ItemDataRole.UserRole + 3


class ThumbnailLoader(QObject):
    """One background thread: newest request first; results arrive as ``loaded(id, QImage)``."""

    loaded = Signal(int, QImage)
    failed = Signal(int)

    def __init__(self, store: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._stack: list[int] = []
        self._queued: set[int] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="heyim-thumbnails", daemon=True)
        self._thread.start()

    def request(self, entry_id: int) -> None:
        with self._cond:
            if entry_id in self._queued:
                self._stack.remove(entry_id)  # move to the top: it is on screen now
            self._stack.append(entry_id)
            self._queued.add(entry_id)
            # Far-off requests from a fast scroll are dropped rather than made.
            if len(self._stack) > 400:
                for old in self._stack[:-400]:
                    self._queued.discard(old)
                del self._stack[:-400]
            self._cond.notify()

    def forget_all(self) -> None:
        with self._cond:
            self._stack.clear()
            self._queued.clear()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stack and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                entry_id = self._stack.pop()
                self._queued.discard(entry_id)
            try:
                path = self.store.thumbnail_path(entry_id, THUMB_SIZE)
                image = QImage(str(path))
                if image.isNull():
                    raise OSError(f"cannot decode {path}")
                image = image.scaled(ICON_SIZE, ICON_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
            except KeyError:  # deleted meanwhile (the keep-limit, another window): nothing to show
                self.failed.emit(entry_id)
                continue
            except Exception:  # noqa: BLE001 - a missing file shows a placeholder, never a crash
                log.info("thumbnail for %s failed", entry_id, exc_info=True)
                self.failed.emit(entry_id)
                continue
            self.loaded.emit(entry_id, image)


def _placeholder(color: QColor) -> QPixmap:
    pix = QPixmap(ICON_SIZE, ICON_SIZE)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(color)
    p.drawRoundedRect(8, 8, ICON_SIZE - 16, ICON_SIZE - 16, 6, 6)
    p.end()
    return pix


class HistoryModel(QAbstractListModel):
    """Newest first; a filter (search text, favourites) re-reads the id list only."""

    count_changed = Signal(int)

    def __init__(self, store: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.query = ""
        self.favourites_only = False
        self._ids: list[int] = []
        self._row_of: dict[int, int] = {}
        self._entries: OrderedDict[int, Any] = OrderedDict()
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self._broken: set[int] = set()
        self._placeholder: QPixmap | None = None
        #: (first row, local date "YYYY-MM-DD", count) per day, newest first.
        self.day_groups: list[tuple[int, str, int]] = []
        self.loader = ThumbnailLoader(store, self)
        self.loader.loaded.connect(self._thumbnail_loaded)
        self.loader.failed.connect(self._thumbnail_failed)
        self.last_query_ms = 0.0
        self.refresh()

    def close(self) -> None:
        self.loader.stop()

    # -- filtering ------------------------------------------------------------------------
    def set_filter(self, query: str | None = None, favourites_only: bool | None = None) -> None:
        if query is not None:
            self.query = query
        if favourites_only is not None:
            self.favourites_only = favourites_only
        self.refresh()

    def refresh(self) -> None:
        t0 = time.perf_counter()
        ids = [int(i) for i in self.store.ids(self.query, self.favourites_only)]
        self.last_query_ms = (time.perf_counter() - t0) * 1000
        self.beginResetModel()
        self._ids = ids
        self._row_of = {entry_id: row for row, entry_id in enumerate(ids)}
        self._entries.clear()  # rows may have changed too (a failed delete marks its entry)
        self.loader.forget_all()
        self._read_days()
        self.endResetModel()
        self.count_changed.emit(len(ids))

    def add_entries(self, entries: list[Any]) -> None:
        """New images from a job: put them on top without resetting the view."""
        if self.query or self.favourites_only:
            self.refresh()
            return
        new = [int(e.id) for e in sorted(entries, key=lambda e: (e.created, e.id), reverse=True)
               if int(e.id) not in self._row_of]
        if not new:
            return
        self.beginInsertRows(QModelIndex(), 0, len(new) - 1)
        self._ids[:0] = new
        self._row_of = {entry_id: row for row, entry_id in enumerate(self._ids)}
        for e in entries:
            self._remember(int(e.id), e)
        self._read_days()
        self.endInsertRows()
        self.count_changed.emit(len(self._ids))

    def remove_ids(self, ids: list[int]) -> None:
        for entry_id in ids:
            row = self._row_of.get(int(entry_id))
            if row is None:
                continue
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._ids[row]
            self._row_of = {e: r for r, e in enumerate(self._ids)}
            self._entries.pop(int(entry_id), None)
            self._pixmaps.pop(int(entry_id), None)
            self.endRemoveRows()
        self._read_days()
        self.count_changed.emit(len(self._ids))

    def update_entry(self, entry_id: int) -> None:
        self._entries.pop(int(entry_id), None)
        row = self._row_of.get(int(entry_id))
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx)

    # -- rows -----------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008 - Qt API
        return 0 if parent.isValid() else len(self._ids)

    def entry_id(self, row: int) -> int:
        return self._ids[row]

    def row_of(self, entry_id: int) -> int | None:
        return self._row_of.get(int(entry_id))

    def _read_days(self) -> None:
        days = self.store.days(self.query, self.favourites_only) if hasattr(self.store, "days") else []
        groups, row = [], 0
        for day, n in days:
            groups.append((row, day, n))
            row += n
        self.day_groups = groups
        self._day_start = {first: day for first, day, _n in groups}

    def day_name(self, day: str) -> str:
        """ "Today", "Yesterday", a weekday or a date for a "YYYY-MM-DD" day."""
        import datetime as dt

        d = dt.date.fromisoformat(day)
        return day_label(time.mktime((d.year, d.month, d.day, 12, 0, 0, 0, 0, -1)))

    def entry_at(self, row: int) -> Any | None:
        if not 0 <= row < len(self._ids):
            return None
        entry_id = self._ids[row]
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._entries.move_to_end(entry_id)
            return entry
        # Read the chunk around this row in one query: scrolling reads ~1 query per screenful.
        start = row - row % ROW_CHUNK
        chunk = [i for i in self._ids[start:start + ROW_CHUNK] if i not in self._entries]
        for e in self.store.get_many(chunk):
            self._remember(int(e.id), e)
        return self._entries.get(entry_id)

    def _remember(self, entry_id: int, entry: Any) -> None:
        self._entries[entry_id] = entry
        self._entries.move_to_end(entry_id)
        while len(self._entries) > ENTRY_CACHE:
            self._entries.popitem(last=False)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = index.row()
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icon(self._ids[row])
        if role == IdRole:
            return self._ids[row]
        if role == DayStartRole:
            day = getattr(self, "_day_start", {}).get(row)
            return self.day_name(day) if day else None
        if role == Qt.ItemDataRole.SizeHintRole:
            return _CELL  # fixed cells: the prompt is elided to the thumbnail's width
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, EntryRole,
                        Qt.ItemDataRole.AccessibleTextRole):
            return None
        entry = self.entry_at(row)
        if entry is None:
            return None
        if role == EntryRole:
            return entry
        if role == Qt.ItemDataRole.DisplayRole:
            return entry_label(entry)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
        stuck = f"\n\nCould not delete: {entry.delete_error}" if entry.delete_error else ""
        return (f"{entry.prompt}\n\n{when}   seed {entry.seed}   {entry.width}x{entry.height}   "
                f"{entry.steps} steps   {entry.scheduler or ''}   {entry.model_name}{stuck}")

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    # -- thumbnails -----------------------------------------------------------------------
    def _icon(self, entry_id: int) -> QPixmap:
        pix = self._pixmaps.get(entry_id)
        if pix is not None:
            self._pixmaps.move_to_end(entry_id)
            return pix
        if entry_id not in self._broken:
            self.loader.request(entry_id)
        if self._placeholder is None:
            from heyim_desktop.ui.qt import QApplication, QPalette

            self._placeholder = _placeholder(QApplication.palette().color(QPalette.ColorRole.Midlight))
        return self._placeholder

    def _thumbnail_loaded(self, entry_id: int, image: QImage) -> None:
        row = self._row_of.get(entry_id)
        if row is None:
            return
        self._pixmaps[entry_id] = QPixmap.fromImage(image)
        while len(self._pixmaps) > PIXMAP_CACHE:
            self._pixmaps.popitem(last=False)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def _thumbnail_failed(self, entry_id: int) -> None:
        self._broken.add(entry_id)

    # -- drag out -------------------------------------------------------------------------
    def mimeTypes(self) -> list[str]:  # noqa: N802 - Qt API
        return ["text/uri-list", HISTORY_MIME]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:  # noqa: N802 - Qt API
        mime = QMimeData()
        entries = [e for e in (self.entry_at(i.row()) for i in indexes if i.isValid()) if e is not None]
        mime.setUrls([QUrl.fromLocalFile(str(e.path)) for e in entries])
        mime.setData(HISTORY_MIME, QByteArray(",".join(str(int(e.id)) for e in entries).encode()))
        if entries:
            mime.setText(entries[0].prompt)
        return mime

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802 - Qt API
        return Qt.DropAction.CopyAction


def day_label(created: float, now: float | None = None) -> str:
    """"Today", "Yesterday", a weekday within the week, else "3 Nov 2026"."""
    import datetime as dt

    day = dt.date.fromtimestamp(created)
    today = dt.date.fromtimestamp(now if now is not None else time.time())
    delta = (today - day).days
    if delta == 0:
        return "Today"
    if delta == 1:
        return "Yesterday"
    if 1 < delta < 7:
        return day.strftime("%A")
    return f"{day.day} {day.strftime('%b %Y')}"


def entry_label(entry: Any, now: float | None = None) -> str:
    """What a grid cell says: the prompt (elided in the middle, where similar prompts agree), then day and time."""
    star = "\u2605 " if entry.favourite else ""
    star = ("(could not delete) " if getattr(entry, "delete_error", "") else "") + star
    when = f"{day_label(entry.created, now)} {time.strftime('%H:%M', time.localtime(entry.created))}"
    prompt = " ".join(entry.prompt.split()) if entry.prompt else "(no prompt)"
    return f"{star}{prompt}\n{when}"


def icon_grid_size() -> QSize:
    return QSize(ICON_SIZE + 16, ICON_SIZE + 46)


_CELL = QSize(ICON_SIZE + 10, ICON_SIZE + 42)
