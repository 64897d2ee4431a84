"""The generation queue as the user sees it: the running job and the waiting ones."""

from __future__ import annotations

from typing import Any

from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.ui.global_shortcut import TRAY_NAME
from heyim_desktop.ui.qt import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
)

SOURCES = {"app": "", "tray": f" ({TRAY_NAME})", "api": " (API)"}


def describe(job: Job) -> str:
    from heyim_desktop.core.upscale_job import UpscaleRequest

    r = job.request
    if isinstance(r, UpscaleRequest):
        return f"Upscale {r.upscaler} {r.effective_scale:g}x to {r.width}x{r.height}"
    prompt = r.prompt.replace("\n", " ")
    prompt = prompt if len(prompt) <= 48 else prompt[:45] + "..."
    kind = "img2img" if r.is_img2img else f"{r.width}x{r.height}"
    count = f" x{r.count}" if r.count > 1 else ""
    return f"{prompt}  [{kind}{count}, {r.steps} steps]{SOURCES.get(job.source, f' ({job.source})')}"


class QueuePanel(QWidget):
    def __init__(self, queue: JobQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.title = QLabel()
        self.list = QListWidget()
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.setMaximumHeight(56)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setUniformItemSizes(True)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Take the selected waiting jobs out of the queue")
        self.clear_button = QPushButton("Clear Queue")
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(self.clear)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        buttons = QHBoxLayout()
        buttons.addWidget(self.title, 1)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.list)
        self.refresh()

    def refresh(self) -> None:
        running = self.queue.running
        pending = self.queue.pending()
        selected = {i.data(Qt.ItemDataRole.UserRole) for i in self.list.selectedItems()}
        self.list.clear()
        if running is not None:
            item = QListWidgetItem(f"Running: {describe(running)}")
            item.setData(Qt.ItemDataRole.UserRole, None)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.list.addItem(item)
        for n, job in enumerate(pending, 1):
            item = QListWidgetItem(f"{n}. {describe(job)}")
            item.setData(Qt.ItemDataRole.UserRole, int(job.id))
            self.list.addItem(item)
            item.setSelected(int(job.id) in selected)
        state = "1 running" if running is not None else "idle"
        self.title.setText(f"<b>Queue</b>: {state}, {len(pending)} waiting")
        # Always on screen: a panel that appears with the first job would move the Generate button.
        self.list.setEnabled(running is not None or bool(pending))
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(any(i.data(Qt.ItemDataRole.UserRole) for i in self.list.selectedItems()))
        self.clear_button.setEnabled(bool(self.queue.pending()))

    def selected_ids(self) -> list[int]:
        return [int(i.data(Qt.ItemDataRole.UserRole)) for i in self.list.selectedItems()
                if i.data(Qt.ItemDataRole.UserRole)]

    def remove_selected(self) -> None:
        for job_id in self.selected_ids():
            self.queue.remove(job_id)
        self.refresh()

    def clear(self) -> None:
        self.queue.clear()
        self.refresh()

    def waiting_labels(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def keyPressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_selected()
            return
        super().keyPressEvent(event)
