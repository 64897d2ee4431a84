"""The main window: panels on the left, the result, its info and the history on the right.

The window only talks to the worker through the queue (via :class:`JobRouter`) and the
worker's signals, so the tray's quick-generate box and the local API share the same path:
they submit to the same queue and the results show up here and in history.

This module builds the window and wires it; its sections live beside it as mixins:
models (:mod:`ui.window_models`), jobs and the shown image (:mod:`ui.window_jobs`), the
input image and reuse (:mod:`ui.window_input`), preferences (:mod:`ui.window_prefs`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.store.preferences import Preferences
from heyim_desktop.ui.banners import Banner, NoModelCard
from heyim_desktop.ui.drop_panel import DropPanel, DroppedImage
from heyim_desktop.ui.generate import JobRouter
from heyim_desktop.ui.history_panel import HistoryPanel
from heyim_desktop.ui.image_info import ImageInfoPanel
from heyim_desktop.ui.lora_picker import attach as attach_lora_picker
from heyim_desktop.ui.menus import WindowActions, build_menus
from heyim_desktop.ui.prompt_panel import PromptPanel
from heyim_desktop.ui.qt import (
    QApplication,
    QCloseEvent,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSettings,
    QSizePolicy,
    QSplitter,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.queue_panel import QueuePanel
from heyim_desktop.ui.result_view import ResultView
from heyim_desktop.ui.reveal import open_path
from heyim_desktop.ui.settings_panel import SettingsPanel
from heyim_desktop.ui.window_input import CANCEL, LOAD_SETTINGS, USE_AS_INPUT, InputSection
from heyim_desktop.ui.window_jobs import JobsSection
from heyim_desktop.ui.window_models import ModelsSection
from heyim_desktop.ui.window_prefs import PrefsSection
from heyim_desktop.ui.window_state import WindowState

log = logging.getLogger(__name__)

__all__ = ["CANCEL", "LOAD_SETTINGS", "MODEL_SUFFIXES", "USE_AS_INPUT", "MainWindow", "WindowServices"]

#: Dropped files with these suffixes go to the Models window instead of the input panel.
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
STATUS_HISTORY = 100


@dataclass
class WindowServices:
    """What runs beside the window: the local API and the Redis render queue (ui.services), if any."""

    api: Any = None
    remote: Any = None


def _retain_when_hidden(widget: QWidget) -> None:
    policy = widget.sizePolicy()
    policy.setRetainSizeWhenHidden(True)
    widget.setSizePolicy(policy)


class MainWindow(ModelsSection, JobsSection, InputSection, PrefsSection, QMainWindow):
    #: Emitted after the window applied a finished job (tests and the tray listen).
    job_shown = Signal(object)

    def __init__(self, *, queue: JobQueue, store: Any, prefs: Preferences, worker: Any,
                 settings: QSettings, list_models: Callable[[Preferences], list[Any]],
                 log_file: Path | None = None, services: WindowServices | None = None) -> None:
        super().__init__()
        from heyim_desktop.ui.dialogs import use_settings

        self.setWindowTitle("HeyIm")
        self.setAcceptDrops(True)
        self.queue, self.store, self.prefs, self.worker = queue, store, prefs, worker
        self.qsettings = settings
        use_settings(settings)
        self.list_models = list_models
        self.log_file = log_file
        self.services = services or WindowServices()
        self.router = JobRouter(queue, self.services.remote)
        self.models: list[Any] = []
        #: The model the user just picked: its recommended settings apply when it is ready.
        self._recommend_for: str | None = None
        #: Replaceable in tests: ask what to do with a dropped image that has settings.
        self.ask_dropped_settings: Callable[[DroppedImage], str] = self._ask_dropped_settings
        #: Replaceable in tests: (images to delete, new limit) -> go ahead?
        self.confirm_prune: Callable[[int, int], bool] = self._confirm_prune
        self.active_job: Job | None = None
        self.models_window: Any = None
        self.viewer: Any = None
        #: What the loaded model can do (ui.worker.model_capabilities), None before one loads.
        self.model_caps: Any = None
        #: The macOS file-open event filter (ui.file_open), installed by build_app.
        self.file_open_filter: Any = None
        self.status_history: deque[str] = deque(maxlen=STATUS_HISTORY)
        #: Set by the tray: True when closing should hide the window and keep the app running.
        self.close_to_tray: Callable[[], bool] = lambda: False

        self.prompt_panel = PromptPanel()
        self.prompt_panel.recent_source = lambda: self.store.recent_prompts(20)
        self.settings_panel = SettingsPanel()
        self.drop_panel = DropPanel()
        from heyim_desktop.ui.controlnet_panel import ControlNetPanel

        self.controlnet_panel = ControlNetPanel()
        self.controlnet_panel.failed.connect(lambda msg: self.show_error(msg, offer_logs=False))
        self.queue_panel = QueuePanel(queue)
        _retain_when_hidden(self.queue_panel)
        self.result_view = ResultView()
        self.info_panel = ImageInfoPanel()
        self.history = HistoryPanel(store)
        self.banner = Banner()
        self.no_model = NoModelCard()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setToolTip("Ctrl+Enter (Cmd+Enter on macOS). While a job runs, this queues another.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.setEnabled(False)
        self.model_state = QLabel("No model loaded")
        self.api_state = QLabel()
        # Long model names must not widen the window: the labels elide, the tooltip has it all.
        for label in (self.model_state, self.api_state):
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(120)
            label.setMaximumWidth(420)
        self.api_state.hide()

        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 4, 0)
        controls_layout.addWidget(self.prompt_panel, 1)
        controls_layout.addWidget(self.settings_panel)
        controls_layout.addWidget(self.drop_panel, 1)
        controls_layout.addWidget(self.controlnet_panel)
        # The settings scroll rather than squeeze on a short screen (the window fits 1024 x 700);
        # Generate, Cancel and the queue stay pinned below them, always in the same place.
        controls_scroll = QScrollArea()
        controls_scroll.setWidget(controls)
        controls_scroll.setWidgetResizable(True)
        controls_scroll.setFrameShape(QFrame.Shape.NoFrame)
        controls_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        controls_scroll.setMinimumWidth(controls.minimumSizeHint().width() + 16)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(controls_scroll, 1)
        run_row = QHBoxLayout()
        run_row.addWidget(self.generate_button, 1)
        run_row.addWidget(self.cancel_button)
        left_layout.addLayout(run_row)
        left_layout.addWidget(self.queue_panel)
        # Banners sit over the result, not over the controls: a message never moves a button.
        result_column = QWidget()
        result_layout = QVBoxLayout(result_column)
        result_layout.setContentsMargins(0, 0, 0, 0)
        result_layout.addWidget(self.banner)
        result_layout.addWidget(self.result_view, 1)
        self.result_split = QSplitter(Qt.Orientation.Horizontal)
        self.result_split.addWidget(result_column)
        self.result_split.addWidget(self.info_panel)
        self.result_split.setStretchFactor(0, 3)
        self.result_split.setStretchFactor(1, 1)
        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.addWidget(self.result_split)
        self.right_split.addWidget(self.history)
        self.right_split.setStretchFactor(0, 3)
        self.right_split.setStretchFactor(1, 2)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(1, 1)
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(self.no_model)
        column.addWidget(self.main_split, 1)
        self.setCentralWidget(central)
        self.statusBar().addPermanentWidget(self.api_state)
        self.statusBar().addPermanentWidget(self.model_state)

        from heyim_desktop.ui.inpainting import Inpainting
        from heyim_desktop.ui.upscaling import Upscaling

        self.upscaling = Upscaling(self, self._upscaler_library)
        self.inpainting = Inpainting(self)
        # Not "actions": that would hide QWidget.actions(), which Qt and the tray call.
        self.menu_actions: WindowActions = build_menus(self)
        # Kept for callers that name them directly (tests, the tray).
        self.generate_action, self.cancel_action, self.save_action = (
            self.menu_actions.generate, self.menu_actions.cancel, self.menu_actions.save)
        self._connect()
        self.lora_picker = attach_lora_picker(self)
        self.state = WindowState(self)
        self.refresh_models(initial=True)
        self.state.restore()

    def _connect(self) -> None:
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel)
        w = self.worker
        w.job_started.connect(self._job_started)
        w.progress.connect(self._progress)
        w.preview.connect(self._preview)
        w.job_finished.connect(self._job_finished)
        w.job_failed.connect(self._job_failed)
        w.job_cancelled.connect(self._job_cancelled)
        w.queue_changed.connect(self.queue_panel.refresh)
        w.model_loading.connect(self._model_loading)
        w.load_status.connect(self.status)
        w.model_ready.connect(self._model_ready)
        w.model_failed.connect(self._model_failed)
        w.model_unloaded.connect(self._model_unloaded)
        self.settings_panel.refresh_models_button.clicked.connect(lambda: self.refresh_models())
        self.settings_panel.model.activated.connect(self._model_picked)
        self.settings_panel.match_input_requested.connect(self._match_input_size)
        self.drop_panel.decoded.connect(self._dropped)
        self.drop_panel.failed.connect(lambda msg: self.show_error(msg, offer_logs=False, cause="input"))
        self.drop_panel.input_changed.connect(self._input_changed)
        self.settings_panel.size_changed.connect(self._size_changed)
        self.history.reuse_requested.connect(self.reuse_settings)
        self.history.use_as_input_requested.connect(self.use_as_input)
        self.history.open_requested.connect(self.result_view.show_entry)
        self.history.copy_requested.connect(self._copy_entry)
        self.history.reveal_requested.connect(self._reveal_entry)
        self.history.deleted.connect(self.result_view.remove_entries)
        self.history.message.connect(self.status)
        self.result_view.message.connect(self.status)
        self.result_view.location_failed.connect(self.say_where)
        self.result_view.shown_changed.connect(self._shown_changed)
        self.result_view.full_screen_requested.connect(self.open_viewer)
        self.info_panel.message.connect(self.status)
        self.result_view.upscale_requested.connect(self.upscaling.upscale)
        self.history.upscale_requested.connect(self.upscaling.upscale)
        self.result_view.inpaint_requested.connect(self.inpainting.edit)
        self.history.inpaint_requested.connect(self.inpainting.edit)
        self.prompt_panel.style_picker.message.connect(self.status)
        self.no_model.add_folder_requested.connect(self.add_model_folder)
        self.no_model.download_model_requested.connect(self.open_models_window)
        self.no_model.enable_download(True)
        self.no_model.demo_requested.connect(self.use_demo_model)
        api, remote = self.services.api, self.services.remote
        if api is not None:
            api.status.connect(self.status)
            api.failed.connect(lambda msg: self.show_error(msg, offer_logs=True, cause="api"))
            api.url_changed.connect(self._api_changed)
        if remote is not None:
            remote.status.connect(self.status)
            remote.failed.connect(lambda msg: self.show_error(msg, offer_logs=False, cause="remote"))
            remote.arrived.connect(self._remote_arrived)

    # -- status and errors ---------------------------------------------------------------
    def status(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)
        self.status_history.append(text)
        self.statusBar().setToolTip("Recent messages:\n" + "\n".join(list(self.status_history)[-8:]))
        log.info("status: %s", text)

    def notice(self, text: str) -> None:
        """Something the user must be able to read later: an info banner that stays until dismissed."""
        self.status_history.append(text)
        log.info("notice: %s", text)
        if not self.banner.isVisible() or self.banner.kind == "info":
            self.banner.show_message(text, "info", cause="notice")

    def show_error(self, text: str, offer_logs: bool = True, kind: str = "error", cause: str = "") -> None:
        actions: tuple[tuple[str, Callable[[], None]], ...] = (("Show Logs", self.show_logs),) if offer_logs else ()
        self.banner.show_message(text, kind, actions, cause=cause)

    def say_where(self, what: str, path: Path) -> None:
        """The desktop could not open ``path``: show it, selectable, with a Copy Path button."""
        def copy() -> None:
            QApplication.clipboard().setText(str(path))
            self.status("Path copied to the clipboard.")

        self.banner.show_message(f"No app on this desktop could open {what}. It is here:\n{path}", "info",
                                 (("Copy Path", copy),), cause="where")

    def show_logs(self) -> None:
        if self.log_file is None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        if not open_path(self.log_file):
            self.say_where("the log file", self.log_file)

    def about(self) -> None:
        from heyim_desktop import __version__

        QMessageBox.about(self, "About HeyIm",
                          f"HeyIm Desktop {__version__}\nLocal Stable Diffusion: nothing leaves this machine.")

    def _api_changed(self, url: str | None) -> None:
        self.api_state.setText(f"API on {url}" if url else "")
        self.api_state.setToolTip("The local HTTP API is serving (Preferences > Local API)" if url else "")
        self.api_state.setVisible(bool(url))

    # -- drops anywhere in the window go to the input panel ------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        self.drop_panel.dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        self.drop_panel.dragMoveEvent(event)

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 - Qt override
        self.drop_panel.dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        from heyim_desktop.ui.drop_panel import local_files

        files = local_files(event.mimeData())
        if files and files[0].suffix.lower() in MODEL_SUFFIXES:
            # A model file, not a picture: the Models window imports it (checked copy, no unpickling).
            self.drop_panel.set_highlight(False)
            self.open_models_window().import_file(str(files[0]))
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            return
        self.drop_panel.dropEvent(event)

    def quit_app(self) -> None:
        """File > Quit: always quits, even when closing the window would only hide it."""
        self.close_to_tray = lambda: False
        if self.close():
            QApplication.quit()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.state.save()
        self._save_prefs()
        if self.close_to_tray():
            event.ignore()
            self.hide()
            return
        if self.viewer is not None:
            self.viewer.close()
        super().closeEvent(event)

