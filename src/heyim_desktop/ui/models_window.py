"""The Models window: list, add a folder, import a file, download, delete, show in the file manager.

Slow work (imports, pickle conversion, downloads) runs on a worker thread; widgets are only
touched on the UI thread, through queued signals. Qt comes through ``heyim_desktop.ui.qt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.models.catalogue import CatalogueEntry, catalogue, describe, library_memory_line, memory_line
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.types import ModelInfo, human_size
from heyim_desktop.ui.qt import (
    QAbstractItemView,
    QComboBox,
    QDesktopServices,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMessageBox,
    QObject,
    QProgressBar,
    QPushButton,
    Qt,
    QThread,
    QTreeWidget,
    QTreeWidgetItem,
    QUrl,
    QVBoxLayout,
    QWidget,
    Signal,
    Slot,
)

log = logging.getLogger(__name__)
COLUMNS = ("Name", "Kind", "Base", "Size", "Status")
CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.ckpt *.pt *.pth *.bin);;All files (*)"
GGUF_FILTER = "GGUF text encoders (*.gguf)"
#: The library labels of the families that take a GGUF text encoder (core.families.text_encoder_gguf)
_GGUF_TEXT_FAMILIES = ("Z-Image", "FLUX.2 [klein]", "SD 3.5")


class _Task(QObject):
    """Runs one callable on a worker thread; reports through signals (queued to the UI thread)."""

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[["_Task"], Any]) -> None:
        super().__init__()
        self.fn = fn

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self)
        except Cancelled:
            self.cancelled.emit()
        except UserFacingError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug: keep the traceback in the log, tell the user briefly
            log.exception("model task failed")
            self.failed.emit(f"Unexpected error: {exc}")
        else:
            self.succeeded.emit(result)
        self.done.emit()


class ModelsWindow(QDialog):
    """``ModelsWindow(library, parent)``. Signals: ``modelsChanged()`` after any change on disk;
    ``foldersChanged(list)`` with the extra folders to save in Preferences.model_folders;
    ``modelChosen(str)`` with a ready model's ref (double-click or "Use"); ``textEncoderChosen(str, str)``
    with a family folder's ref and the GGUF text encoder file to use for it ("" for its own again)."""

    modelsChanged = Signal()
    foldersChanged = Signal(list)
    modelChosen = Signal(str)
    textEncoderChosen = Signal(str, str)

    def __init__(self, library: ModelLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.setWindowTitle("Models")
        self.resize(820, 460)
        self._thread: QThread | None = None
        self._task: _Task | None = None
        self._cancel: CancelToken | None = None
        self._models: list[ModelInfo] = []
        #: ref -> the GGUF text encoder chosen for it (the main window keeps it in Preferences.text_encoders)
        self.text_encoders: dict[str, str] = {}

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.itemDoubleClicked.connect(lambda *_: self._use_selected())
        self.tree.itemSelectionChanged.connect(self._update_buttons)

        self.add_folder_button = QPushButton("Add folder…")
        self.import_button = QPushButton("Import file…")
        self.delete_button = QPushButton("Delete…")
        self.reveal_button = QPushButton("Show in file manager")
        self.use_button = QPushButton("Use")
        self.text_encoder_button = QPushButton("Text encoder…")
        self.text_encoder_button.setToolTip("Use a GGUF text encoder file (Qwen3, or T5 for SD 3.5) instead of the "
                                            "folder's own; for Z-Image, FLUX.2 [klein] and SD 3.5 folders")
        self.text_encoder_button.clicked.connect(self._text_encoder_clicked)
        self.add_folder_button.clicked.connect(self._add_folder)
        self.import_button.clicked.connect(self._import_clicked)
        self.delete_button.clicked.connect(self._delete_selected)
        self.reveal_button.clicked.connect(self._reveal_selected)
        self.use_button.clicked.connect(self._use_selected)
        row = QHBoxLayout()
        for b in (self.add_folder_button, self.import_button, self.delete_button, self.reveal_button,
                  self.text_encoder_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.use_button)

        self.catalogue_box = QComboBox()
        self._entries: list[CatalogueEntry] = catalogue()
        for e in self._entries:
            self.catalogue_box.addItem(f"{e.title} — {describe(e)}", e.name)
            tip = "\n".join(x for x in (e.note, memory_line(e), "From " + " + ".join(e.repos)) if x)
            self.catalogue_box.setItemData(self.catalogue_box.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.download_button = QPushButton("Download")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.download_button.clicked.connect(self._download_clicked)
        self.cancel_button.clicked.connect(self.cancel_task)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        dl = QHBoxLayout()
        dl.addWidget(QLabel("Recommended:"))
        dl.addWidget(self.catalogue_box, 1)
        dl.addWidget(self.download_button)
        dl.addWidget(self.cancel_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addLayout(row)
        layout.addLayout(dl)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.refresh()

    # --- listing ------------------------------------------------------------------------------

    def refresh(self) -> None:
        selected = self.selected_model()
        self._models = self.library.list() + self.library.list_upscalers()
        self.tree.clear()
        for m in self._models:
            kind = m.kind_label
            if m.ref in self.text_encoders:  # a GGUF text encoder chosen for it (Text encoder…)
                kind += f", text encoder {Path(self.text_encoders[m.ref]).name}"
            item = QTreeWidgetItem([m.name, kind, m.base, human_size(m.size_bytes) if m.size_bytes else "—",
                                    m.status.value if m.ready else f"{m.status.value}: {m.problem}"])
            item.setData(0, Qt.ItemDataRole.UserRole, m.ref)
            item.setToolTip(0, m.ref)
            item.setToolTip(4, m.problem or "Ready to use")
            fits = library_memory_line(m)
            if fits:
                item.setToolTip(3, fits)
            self.tree.addTopLevelItem(item)
            if selected is not None and m.ref == selected.ref:
                item.setSelected(True)
        self._update_buttons()

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def selected_model(self) -> ModelInfo | None:
        items = self.tree.selectedItems() if hasattr(self, "tree") else []
        if not items:
            return None
        ref = items[0].data(0, Qt.ItemDataRole.UserRole)
        return next((m for m in self._models if m.ref == ref), None)

    def select(self, ref: str) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item is None:
                continue
            item.setSelected(item.data(0, Qt.ItemDataRole.UserRole) == ref)

    def _update_buttons(self) -> None:
        m = self.selected_model()
        busy = self._thread is not None
        self.delete_button.setEnabled(m is not None and m.kind != "demo" and not busy)
        self.reveal_button.setEnabled(m is not None and m.kind != "demo")
        self.use_button.setEnabled(m is not None and m.ready)
        self.text_encoder_button.setEnabled(m is not None and m.kind == "diffusers" and m.base in _GGUF_TEXT_FAMILIES
                                            and m.status.value in ("ready", "incomplete"))
        for b in (self.import_button, self.download_button, self.add_folder_button):
            b.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # --- asking the user (separate methods so tests can answer) --------------------------------

    def ask_folder(self) -> str:
        from heyim_desktop.ui.dialogs import remember_folder, start_folder

        folder = QFileDialog.getExistingDirectory(self, "Add a folder of models", str(start_folder("folder")))
        if folder:
            remember_folder("folder", Path(folder))
        return folder

    def ask_file(self) -> str:
        from heyim_desktop.ui.dialogs import remember_folder, start_folder

        path = QFileDialog.getOpenFileName(self, "Import a model file", str(start_folder("model")), CHECKPOINT_FILTER)[0]
        if path:
            remember_folder("model", Path(path).parent)
        return path

    def ask_text_encoder(self) -> str:
        from heyim_desktop.ui.dialogs import remember_folder, start_folder

        path = QFileDialog.getOpenFileName(self, "Choose a GGUF text encoder", str(start_folder("model")),
                                           GGUF_FILTER)[0]
        if path:
            remember_folder("model", Path(path).parent)
        return path

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_name(self, title: str, text: str, default: str) -> str | None:
        """A new name from the user, or None if they cancel."""
        value, ok = QInputDialog.getText(self, title, text, text=default)
        return value if ok else None

    # --- actions ------------------------------------------------------------------------------

    def _add_folder(self) -> None:
        folder = self.ask_folder()
        if not folder:
            return
        before = {m.ref for m in self._models}
        try:
            added = self.library.add_folder(folder)
        except UserFacingError as exc:
            self.status.setText(str(exc))
            return
        self.foldersChanged.emit([str(f) for f in self.library.extra_folders])
        self.refresh()
        self.modelsChanged.emit()
        found = [m for m in self._models if m.ref not in before]
        usable = [m for m in found if m.ready]
        if usable:
            self.status.setText(f"Found {len(usable)} usable model{'s' if len(usable) != 1 else ''} in {added}.")
            self.select(usable[0].ref)
        elif found:
            self.status.setText(f"{added} holds {len(found)} model{'s' if len(found) != 1 else ''} HeyIm cannot use "
                                "yet; the list says why.")
        else:
            self.status.setText(f"No models in {added}. HeyIm looks for diffusers folders (with a model_index.json), "
                                ".safetensors checkpoints and Core ML folders; the folder stays in the list and is "
                                "searched again on Refresh.")

    def _import_clicked(self) -> None:
        path = self.ask_file()
        if path:
            self.import_file(path)

    @Slot(str)
    def import_file(self, path: str) -> None:
        """Import a file or folder (also for files dropped on the main window)."""
        from heyim_desktop.core.model_files import FileKind, sniff
        from heyim_desktop.models.importer import existing_name, import_model

        source = Path(path)
        convert = False
        try:
            is_pickle = source.is_file() and sniff(source) is FileKind.PICKLE
        except OSError as exc:
            self.status.setText(f"Cannot read {source.name}: {exc}")
            return
        except UserFacingError as exc:  # a FIFO or device: refused before it is read
            self.status.setText(str(exc))
            return
        name: str | None = None
        try:
            taken = existing_name(source)
            while taken is not None:
                name = self.ask_name("Model name taken", f"A model named {taken} already exists. "
                                     "Import this one under another name:", f"{taken}-2")
                if not name:
                    self.status.setText(f"{source.name} was not imported.")
                    return
                taken = existing_name(source, name=name)
        except UserFacingError as exc:
            self.status.setText(str(exc))
            return
        if is_pickle:
            convert = self.confirm(
                "Convert pickle checkpoint?",
                f"{source.name} is a pickle checkpoint. Pickles can run code when opened, so HeyIm never "
                "opens them itself.\n\nConvert the weights to .safetensors in a separate process that only "
                "accepts tensors (torch.load with weights_only=True)?",
            )
            if not convert:
                self.status.setText(f"{source.name} was not imported.")
                return
        verb = "Converting" if convert else "Importing"
        self._start(lambda task: import_model(source, convert=convert, name=name), f"{verb} {source.name}…")

    def _download_clicked(self) -> None:
        from heyim_desktop.models.download import Downloader, plan_download

        name = self.catalogue_box.currentData()
        entry = next((e for e in self._entries if e.name == name), None)
        if entry is None:
            return
        if entry.licence_terms and not self.confirm(f"{entry.title}: licence",
                                                    f"{entry.licence_terms}\n\nDo you accept these terms?"):
            self.status.setText(f"{entry.title} was not downloaded: its licence was not accepted.")
            return

        def work(task: _Task) -> ModelInfo:
            plan = plan_download(entry)
            task.progress.emit(("plan", plan.total_bytes))
            return Downloader(plan, progress=lambda p: task.progress.emit(("bytes", p)), cancel=self._cancel).run()

        self._start(work, f"Downloading {entry.title}…", cancellable=True)

    def cancel_task(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.status.setText("Cancelling…")

    def _delete_selected(self) -> None:
        m = self.selected_model()
        if m is None or m.kind == "demo":
            return
        where = "its Hugging Face cache entry" if m.source == "hf-cache" else m.ref
        if not self.confirm("Delete model?", f"Delete {m.name} ({human_size(m.size_bytes)}) from disk?\n\n{where}\n\n"
                            "This cannot be undone."):
            return
        try:
            self.library.delete(m)
        except (UserFacingError, OSError) as exc:
            self.status.setText(f"Could not delete {m.name}: {exc}")
        else:
            self.status.setText(f"Deleted {m.name}.")
        self.refresh()
        self.modelsChanged.emit()

    def _text_encoder_clicked(self) -> None:
        m = self.selected_model()
        if m is not None:
            self.choose_text_encoder(m, self.ask_text_encoder())

    def choose_text_encoder(self, m: ModelInfo, path: str) -> None:
        """Check ``path`` against the family folder (header only, no torch) and pass it on; a cancelled
        choice for a folder that has one offers to go back to the folder's own text encoder."""
        from heyim_desktop.core.families import read_family_index
        from heyim_desktop.core.families.text_encoder_gguf import explicit_text_encoder

        if not path:
            if m.ref in self.text_encoders and self.confirm(
                    "Text encoder", f"Use {m.name}'s own text encoder again instead of "
                                    f"{Path(self.text_encoders[m.ref]).name}?"):
                self.textEncoderChosen.emit(m.ref, "")
                self.text_encoders.pop(m.ref, None)
                self.refresh()
                self.status.setText(f"{m.name} uses its own text encoder from its next load.")
            return
        found = read_family_index(Path(m.ref))
        if found is None:
            self.status.setText(f"{m.name} is not a Z-Image, FLUX.2 [klein] or SD 3.5 folder.")
            return
        try:
            chosen = explicit_text_encoder(Path(path), Path(m.ref), found[0], found[1])
        except UserFacingError as exc:
            self.status.setText(str(exc))
            return
        self.textEncoderChosen.emit(m.ref, str(Path(path)))
        self.text_encoders[m.ref] = str(Path(path))
        self.refresh()
        part = "T5 text encoder" if chosen.part == "text_encoder_3" else "text encoder"
        self.status.setText(f"{m.name} uses {chosen.file.name} ({chosen.quantization}, dequantized on load) as its "
                            f"{part} from its next load.")

    def _reveal_selected(self) -> None:
        m = self.selected_model()
        if m is None or m.kind == "demo":
            return
        path = Path(m.ref)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path if path.is_dir() else path.parent)))

    def _use_selected(self) -> None:
        m = self.selected_model()
        if m is not None and m.ready:
            self.modelChosen.emit(m.ref)

    # --- the worker ---------------------------------------------------------------------------

    def busy(self) -> bool:
        return self._thread is not None

    def _start(self, fn: Callable[[_Task], Any], message: str, *, cancellable: bool = False) -> None:
        if self._thread is not None:
            self.status.setText("Another model task is running; wait for it or cancel it.")
            return
        self._cancel = CancelToken() if cancellable else None
        self._thread = QThread(self)
        self._task = _Task(fn)
        self._task.moveToThread(self._thread)
        self._thread.started.connect(self._task.run)
        self._task.progress.connect(self._on_progress)
        self._task.succeeded.connect(self._on_succeeded)
        self._task.failed.connect(self._on_failed)
        self._task.cancelled.connect(self._on_cancelled)
        self._task.done.connect(self._thread.quit)
        self._thread.finished.connect(self._on_thread_finished)
        self.progress.setRange(0, 0)  # busy until the first byte count
        self.progress.setVisible(True)
        self.status.setText(message)
        self._thread.start()
        self._update_buttons()

    @Slot(object)
    def _on_progress(self, event: Any) -> None:
        kind, value = event
        if kind == "plan":
            self.status.setText(f"{self.status.text().rstrip('…')}: {human_size(value)}")
            return
        total = max(1, value.total_bytes)
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * value.done_bytes / total))
        self.progress.setFormat(f"{human_size(value.done_bytes)} / {human_size(value.total_bytes)}  "
                                f"({human_size(int(value.bytes_per_s))}/s)")

    @Slot(object)
    def _on_succeeded(self, info: ModelInfo) -> None:
        self.status.setText(f"{info.name} is ready." if info.ready else f"{info.name}: {info.problem}")
        self.refresh()
        self.select(info.ref)
        self.modelsChanged.emit()

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(message)

    @Slot()
    def _on_cancelled(self) -> None:
        self.status.setText("Cancelled. The partial download is kept and resumes next time.")

    @Slot()
    def _on_thread_finished(self) -> None:
        if self._thread is not None:
            self._thread.wait()
            self._thread.deleteLater()
        if self._task is not None:
            self._task.deleteLater()
        self._thread, self._task, self._cancel = None, None, None
        self.progress.setVisible(False)
        self._update_buttons()

    def done(self, result: int) -> None:  # closing the window cancels and waits for the worker
        self.cancel_task()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        super().done(result)
