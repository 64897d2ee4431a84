"""The main window: panels on the left, the result, its info and the history on the right.

The window only talks to the worker through the queue (via :class:`JobRouter`) and the
worker's signals, so the tray's quick-generate box and the local API share the same path:
they submit to the same queue and the results show up here and in history.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.core.loading import DEMO_REF
from heyim_desktop.store.preferences import Preferences, save_preferences
from heyim_desktop.ui.banners import Banner, NoModelCard
from heyim_desktop.ui.drop_panel import DropPanel, DroppedImage
from heyim_desktop.ui.generate import JobRouter, build_request, plural, progress_label, queue_note
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
    QFileDialog,
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
from heyim_desktop.ui.result_view import ResultView, ShownImage, entry_caption
from heyim_desktop.ui.reveal import open_path, show_in_file_manager
from heyim_desktop.ui.settings_panel import SettingsPanel
from heyim_desktop.ui.tasks import pil_to_qimage
from heyim_desktop.ui.window_state import WindowState

log = logging.getLogger(__name__)

#: What to do with a dropped image that carries generation settings.
LOAD_SETTINGS, USE_AS_INPUT, CANCEL = "settings", "input", "cancel"
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


class MainWindow(QMainWindow):
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

    # -- output folder -------------------------------------------------------------------
    def output_folder(self) -> Path:
        return Path(self.store.images_dir)

    def open_output_folder(self) -> None:
        folder = self.output_folder()
        folder.mkdir(parents=True, exist_ok=True)
        if not open_path(folder):
            self.say_where("the image folder", folder)

    # -- models --------------------------------------------------------------------------
    def refresh_models(self, initial: bool = False) -> None:
        try:
            self.models = self.list_models(self.prefs)
        except Exception:  # noqa: BLE001 - a bad folder must not stop the app
            log.exception("listing models failed")
            self.models = []
        real = [m for m in self.models if m.ref != DEMO_REF and m.ready]
        chosen = self.prefs.last_model
        # The demo makes noise: it is offered, never picked silently.
        shown = self.models if (real or chosen == DEMO_REF) else []
        self.settings_panel.set_models(shown, current=chosen or None)
        if not shown:
            self.settings_panel.model.addItem("No model: add one or try the demo", "")
            self.settings_panel.model.setCurrentIndex(0)
        self.no_model.setVisible(not shown)
        if self.settings_panel.model_ref():
            self.banner.clear("model")
        self.settings_panel.hires.set_upscalers(self.upscaling.model_names())
        from heyim_desktop.ui.controlnet_panel import library_source

        self.controlnet_panel.refresh(library_source(self.prefs.model_folders))

    def _upscaler_library(self) -> Any:
        from heyim_desktop.models.library import ModelLibrary

        return ModelLibrary(self.prefs.model_folders, include_demo=False, hf_cache=False)

    def _model_picked(self, _index: int) -> None:
        ref = self.settings_panel.model_ref()
        if ref:
            self.prefs = self.prefs.replace(last_model=ref)
            self.banner.clear("model")
            self._recommend_for = ref  # the user's pick: its recommended settings apply once loaded
            self.worker.request_model(ref)  # load now, releasing the previous model first

    def use_demo_model(self) -> None:
        self.prefs = self.prefs.replace(last_model=DEMO_REF)
        self._save_prefs()
        self.refresh_models()
        self.settings_panel.select_model(DEMO_REF)
        self.status("Demo model selected: a tiny random model that makes abstract noise.")

    def add_model_folder(self, folder: str | None = None) -> None:
        if folder is None:
            from heyim_desktop.ui.dialogs import remember_folder, start_folder

            folder = QFileDialog.getExistingDirectory(self, "Add a folder with models", str(start_folder("folder")))
            if folder:
                remember_folder("folder", Path(folder))
        if not folder:
            return
        if folder not in self.prefs.model_folders:
            self.prefs = self.prefs.replace(model_folders=(*self.prefs.model_folders, folder))
            self._save_prefs()
        before = {m.ref for m in self.models}
        self.refresh_models()
        found = [m for m in self.models if m.ref not in before and m.ready]
        if found:
            self.settings_panel.select_model(found[0].ref)
            self.prefs = self.prefs.replace(last_model=found[0].ref)
            self.banner.clear("model")
            self.status(f"Found {plural(len(found), 'model')} in {folder}.")
        else:
            self.show_error(f"No usable model found in {folder}. HeyIm reads diffusers folders (with a "
                            "model_index.json) and .safetensors checkpoints; File > Models... lists what it saw.",
                            offer_logs=False, kind="warning", cause="model")

    def open_models_window(self) -> Any:
        """The Models window (list, add, import, download, delete); created on first use."""
        if self.models_window is None:
            from heyim_desktop.models.library import ModelLibrary
            from heyim_desktop.ui.models_window import ModelsWindow

            self.models_window = ModelsWindow(ModelLibrary(self.prefs.model_folders), self)
            self.models_window.modelsChanged.connect(lambda: self.refresh_models())
            self.models_window.foldersChanged.connect(self._model_folders_changed)
            self.models_window.modelChosen.connect(self.choose_model)
        self.models_window.show()
        self.models_window.raise_()
        self.models_window.activateWindow()
        return self.models_window

    def _model_folders_changed(self, folders: list[str]) -> None:
        self.prefs = self.prefs.replace(model_folders=tuple(folders))
        self._save_prefs()
        self.refresh_models()

    def open_convert_dialog(self) -> Any:
        from heyim_desktop.ui.convert_dialog import open_for_window

        return open_for_window(self)

    def choose_model(self, ref: str) -> None:
        """Select ``ref`` in the picker and load it (from the Models window's "Use")."""
        self.prefs = self.prefs.replace(last_model=ref)
        self._save_prefs()
        self.refresh_models()
        if self.settings_panel.select_model(ref):
            self._recommend_for = ref
            self.worker.request_model(ref)
            self.status(f"Model selected: {self._model_label(ref)}.")

    def _model_loading(self, ref: str) -> None:
        from heyim_desktop.ui.load_clock import LoadClock

        self.result_view.start_job("Loading model...")
        if not hasattr(self, "load_clock"):
            self.load_clock = LoadClock(self.model_state, self._model_label)
        self.load_clock.start(ref)

    def _stop_load_clock(self) -> None:
        if hasattr(self, "load_clock"):
            self.load_clock.stop()

    def _model_ready(self, info: Any) -> None:
        from heyim_desktop.ui.worker import model_capabilities

        self._stop_load_clock()
        self.model_state.setText(f"Ready: {info.model_name} on {info.engine_name} ({info.seconds:.1f} s)")
        self.model_state.setToolTip(self.model_state.text())
        self.prompt_panel.set_counter(info.count_tokens, info.capabilities)
        caps = model_capabilities(info)
        self.model_caps = caps
        self.settings_panel.set_native_size(caps.native_size)
        self._adapt_to_capabilities(info.capabilities)
        self._show_recommended(info)
        self.settings_panel.set_fixed_size(caps.fixed_size)
        self._follow_default_size(tuple(info.default_size))
        self.settings_panel.set_clip_skip_available(getattr(info, "supports_clip_skip", True))
        if self.active_job is None:
            self.result_view.end_job()

    def _adapt_to_capabilities(self, caps: Any) -> None:
        """The one place the window reads what a model takes: negative prompt, guidance range, samplers."""
        from heyim_desktop.core.capabilities import Capabilities

        caps = caps if caps is not None else Capabilities()
        negative = self.prompt_panel.negative
        negative.setEnabled(caps.negative_prompt)
        negative.setToolTip("" if caps.negative_prompt else "This model takes no negative prompt")
        panel = self.settings_panel
        panel.guidance.setRange(*caps.guidance_range)
        only = caps.schedulers[0] if len(caps.schedulers) == 1 else None
        if only is not None:
            panel.scheduler.setCurrentText(only)
        panel.scheduler.setEnabled(only is None)
        panel.scheduler.setToolTip(f"This model runs its own {only} sampler" if only else "")

    def _show_recommended(self, info: Any) -> None:
        """Show the model's recommended settings; apply them when the user has just picked it."""
        caps = getattr(info, "capabilities", None)
        self.settings_panel.show_recommended(caps.recommended if caps is not None else None)
        picked = self._recommend_for == info.ref
        self._recommend_for = None
        if picked:
            applied = self.settings_panel.apply_recommended()
            if applied:
                self.status(f"{info.model_name} is made for {applied}: set.")

    def _follow_default_size(self, size: tuple[int, int]) -> None:
        """A newly loaded model brings its own size (1024 for SDXL) unless the user chose another."""
        previous = getattr(self, "_model_default_size", None) or (512, 512)  # the panel's own default
        current = (self.settings_panel.width_box.value(), self.settings_panel.height_box.value())
        if current == previous and size != previous:
            self.settings_panel.set_size(*size)
        self._model_default_size = size

    def _model_failed(self, ref: str, message: str) -> None:
        self._stop_load_clock()
        self.model_state.setText("Model failed to load")
        self.prompt_panel.set_counter(None)
        self.result_view.end_job()
        self.show_error(f"Could not load the model {self._model_label(ref)}: {message}", cause="model")

    def _model_unloaded(self, ref: str, why: str) -> None:
        self.model_state.setText("No model loaded")
        self.prompt_panel.set_counter(None)
        when = "after the idle time set in Preferences" if why == "idle" else "as asked"
        self.status(f"Model {self._model_label(ref)} unloaded {when}; its memory is back with the system.")

    def _model_label(self, ref: str) -> str:
        return next((m.name for m in self.models if m.ref == ref), Path(ref).name or ref)

    # -- generating ----------------------------------------------------------------------
    def build_request(self) -> Any:
        prompt, negative, styles = self.prompt_panel.final_prompts()  # the chosen styles applied
        extra: dict[str, Any] = {"styles": styles, **self.drop_panel.edit_fields(),
                                 "controlnets": self.controlnet_panel.units()}
        if self.drop_panel.image is None:
            hires = self.settings_panel.hires.settings()
            if hires is not None:  # hires fix is text-to-image only
                extra["hires"] = self.upscaling.resolve_hires(hires)
        return self.lora_picker.resolve(  # <lora:...> tags and embeddings as library files
            build_request(self.settings_panel.values(), prompt, negative, self.drop_panel.image, extra=extra))

    def generate(self) -> Job | None:
        if not self.settings_panel.model_ref():
            self.no_model.show()
            self.show_error("Choose a model first: add a model folder, or try the demo model.",
                            offer_logs=False, kind="warning", cause="model")
            return None
        if self.drop_panel.busy:
            self.status("Still reading the input image...")
            return None
        try:
            request = self.build_request()
        except InvalidRequest as exc:
            hint = "Type a prompt first." if exc.field == "prompt" and not self.prompt_panel.prompt_text() else str(exc)
            self.show_error(hint, offer_logs=False, kind="warning", cause="request")
            if exc.field == "prompt":
                self.prompt_panel.prompt.setFocus()
            return None
        return self.submit(request)

    def submit(self, request: Any, source: str = "app") -> Job | None:
        """Queue a request (the tray and other front ends may call this too)."""
        try:
            routed = self.router.submit(request, source=source, allow_remote=source == "app")
        except UserFacingError as exc:
            self.show_error(str(exc), offer_logs=False, cause="queue")
            return None
        if self.banner.isVisible() and self.banner.kind != "info":
            self.banner.dismiss()  # the next action worked: the old problem is gone
        self.state.remember_settings()
        if routed.job is not None:
            self.settings_panel.remember_seed(request.seed)
            note = queue_note(self.queue, routed.job)
            if note:
                self.status(f"Queued ({note}).")
        return routed.job

    def cancel(self) -> None:
        if self.queue.cancel_running():
            self.status("Cancelling...")

    def _job_started(self, job: Job) -> None:
        self.active_job = job
        self.cancel_button.setEnabled(True)
        self.result_view.start_job("Starting...")

    def _progress(self, job_id: int, done: int, total: int, elapsed: float) -> None:
        job = self.active_job
        if job is not None and int(job.id) == job_id:
            batch = self.model_caps.max_batch if self.model_caps is not None else None
            self.result_view.set_progress(done, total, elapsed, progress_label(job, done, total, batch))

    def _preview(self, job_id: int, image: Any) -> None:
        if self.active_job is not None and int(self.active_job.id) == job_id:
            self.result_view.set_preview(image)

    def _job_ended(self, job: Job) -> bool:
        if self.active_job is None or int(self.active_job.id) != int(job.id):
            return False
        self.active_job = None
        self.cancel_button.setEnabled(False)
        self.result_view.end_job()
        return True

    def _job_finished(self, job: Job) -> None:
        self._job_ended(job)
        result = job.result
        entries: list[Any] = [e for e in job.saved if hasattr(e, "id")]
        if result is not None:
            shown = []
            for i, item in enumerate(result.images):
                entry = entries[i] if i < len(entries) else None
                shown.append(ShownImage(pil_to_qimage(item.image), Path(entry.path) if entry else None, entry,
                                        entry_caption(entry) if entry else f"Seed {item.seed}"))
            self.result_view.show_images(shown)
            t = result.timings.get("total", 0.0)
            self.settings_panel.remember_seed(result.request.seed)
            where = f" Saved in {Path(entries[0].path).parent}." if entries else ""
            self.status(f"Done: {plural(len(result.images), 'image')} in {t:.1f} s, seed {result.request.seed}.{where}")
            if result.warnings:
                self.show_error("\n".join(result.warnings), offer_logs=False, kind="warning", cause="job")
        self.history.model.add_entries(entries)
        self._after_prune()
        self.job_shown.emit(job)

    def _after_prune(self) -> None:
        """The keep-limit may have deleted old images while saving: drop them from the grid and the view."""
        if not self.store.keep_limit:
            return
        shown_ids = [s.entry_id for s in self.result_view.images if s.entry_id is not None]
        alive = {int(e.id) for e in self.store.get_many(shown_ids)} if shown_ids else set()
        self.result_view.remove_entries([i for i in shown_ids if i not in alive])
        if self.history.model.rowCount() != self.store.count(self.history.model.query,
                                                             self.history.model.favourites_only):
            self.history.model.refresh()

    def _job_failed(self, job: Job, message: str) -> None:
        self._job_ended(job)
        self.show_error(message, cause="job")
        self.job_shown.emit(job)

    def _job_cancelled(self, job: Job) -> None:
        if self._job_ended(job) or job.started is not None:
            self.status("Cancelled; nothing was saved.")
        self.job_shown.emit(job)

    def _remote_arrived(self, entries: list[Any]) -> None:
        self.history.model.add_entries(entries)
        self.status(f"{plural(len(entries), 'image')} arrived from the render queue.")

    # -- the shown image -----------------------------------------------------------------
    def _shown_changed(self, shown: ShownImage | None) -> None:
        self.info_panel.show_entry(shown.entry if shown is not None else None)
        self.menu_actions.seed_of_shown.setEnabled(shown is not None and shown.entry is not None)

    def use_shown_seed(self) -> None:
        shown = self.result_view.current()
        if shown is None or shown.entry is None or shown.entry.seed is None:
            self.status("No image with a seed is shown.")
            return
        self.settings_panel.set_seed(int(shown.entry.seed), locked=True)
        self.status(f"Seed {shown.entry.seed} locked: the same settings make the same image.")

    def toggle_info(self) -> None:
        self.info_panel.setVisible(not self.info_panel.isVisible())
        self.menu_actions.image_info.setChecked(self.info_panel.isVisible())

    def open_viewer(self) -> Any:
        """The full-screen viewer on the shown image; arrow keys step through history."""
        from heyim_desktop.ui.viewer import ImageViewer

        shown = self.result_view.current()
        if shown is None:
            self.status("No image to show full screen.")
            return None
        if self.viewer is None:
            self.viewer = ImageViewer(self.history.model)
            self.viewer.entry_shown.connect(self.history.select_entry)
        self.viewer.open_at(shown)
        return self.viewer

    # -- input image, reuse --------------------------------------------------------------
    def _input_changed(self, dropped: DroppedImage | None) -> None:
        from heyim_desktop.core.schedulers import DEFAULT_IMG2IMG

        img2img = dropped is not None
        self.settings_panel.set_img2img(img2img, dropped.image.size if dropped is not None else None)
        self.generate_button.setText("Generate from Image" if img2img else "Generate")
        self._size_changed()
        # The original design used PNDM for image-to-image: switch only from the default, and say so.
        sched = self.settings_panel.scheduler
        if img2img and sched.currentText() == self.prefs.default_scheduler and DEFAULT_IMG2IMG != sched.currentText():
            self.settings_panel.switch_scheduler_for_img2img(DEFAULT_IMG2IMG)
        elif not img2img:
            self.settings_panel.restore_scheduler_after_img2img()

    def _size_changed(self) -> None:
        values = self.settings_panel.values()
        self.drop_panel.set_target_size(int(values["width"]), int(values["height"]))

    def _match_input_size(self) -> None:
        dropped = self.drop_panel.current
        if dropped is None:
            self.status("Add an input image first.")
            return
        self.settings_panel.match_size(*dropped.image.size)

    def _dropped(self, dropped: DroppedImage) -> None:
        self.banner.clear("input")
        if dropped.parameters is not None and not dropped.from_history:
            choice = self.ask_dropped_settings(dropped)
            if choice == LOAD_SETTINGS:
                self.apply_settings(dropped.parameters.request_settings(), dropped.parameters.params.get("Lora hashes", ""))
                self.status(f"Loaded the settings of {dropped.label}.")
                return
            if choice != USE_AS_INPUT:
                return
        self.drop_panel.set_input(dropped)
        self.status(f"Image-to-image from {dropped.label}.")

    def _ask_dropped_settings(self, dropped: DroppedImage) -> str:
        box = QMessageBox(self)
        box.setWindowTitle("Image with settings")
        box.setText(f"{dropped.label} carries the settings it was made with.")
        box.setInformativeText(f"Prompt: {dropped.parameters.prompt[:200]}")
        load = box.addButton("Load Its Settings", QMessageBox.ButtonRole.AcceptRole)
        use = box.addButton("Use as Input Image", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return LOAD_SETTINGS if clicked is load else USE_AS_INPUT if clicked is use else CANCEL

    def apply_settings(self, settings: dict[str, Any], lora_hashes: str = "") -> None:
        """Prompt and every setting back into the panels (history, a dropped PNG, last session)."""
        if "prompt" in settings:
            self.prompt_panel.set_prompt(settings.get("prompt") or "", settings.get("negative_prompt") or "")
            # An image's prompt already has its styles in it; only the last session remembers ticks.
            chosen = settings.get("style_selection")
            self.prompt_panel.style_picker.set_selected(
                [n for n in chosen if isinstance(n, str)] if isinstance(chosen, list) else [])
            self.lora_picker.reuse(lora_hashes)  # its LoRAs by hash, then name; a banner names missing ones
        model = settings.get("model")
        if isinstance(model, str) and model and not self.settings_panel.select_model(model):
            match = next((m for m in self.models if m.name == model or Path(m.ref).name == model), None)
            if match is not None:
                settings = dict(settings, model=match.ref)
        self.settings_panel.apply(settings)

    def reuse_settings(self, entry: Any) -> None:
        from heyim_desktop.core.metadata import parse_parameters

        self.apply_settings(entry.request_settings(), parse_parameters(entry.parameters).params.get("Lora hashes", ""))
        self.controlnet_panel.reuse(entry)  # its units with their kept control images
        self.status("Settings loaded from history.")
        self.inpainting.reuse(entry)  # an inpainted image: its input picture and mask come back too

    def use_as_input(self, entry: Any) -> None:
        self.drop_panel.load_file(Path(entry.path), from_history=True)

    def _copy_entry(self, entry: Any) -> None:
        from heyim_desktop.ui.qt import QImage
        from heyim_desktop.ui.zoom_view import image_mime

        QApplication.clipboard().setMimeData(image_mime(QImage(str(entry.path)), Path(entry.path)))
        self.status("Image copied to the clipboard.")

    def _reveal_entry(self, entry: Any) -> None:
        if not show_in_file_manager(Path(entry.path)):
            self.say_where("the image", Path(entry.path))

    # -- preferences ---------------------------------------------------------------------
    def open_preferences(self) -> None:
        from heyim_desktop.ui.preferences_dialog import PreferencesDialog

        dialog = PreferencesDialog(self.prefs, self)
        if dialog.exec():
            self.apply_preferences(dialog.result_preferences())

    def prune_count(self, limit: int) -> int:
        """How many images a keep-limit of ``limit`` deletes now (favourites are always kept)."""
        if limit <= 0:
            return 0
        return max(0, int(self.store.count()) - int(self.store.count(favourites_only=True)) - limit)

    def _confirm_prune(self, n: int, limit: int) -> bool:
        answer = QMessageBox.question(
            self, "Keep in history",
            f"Keeping only the newest {plural(limit, 'image')} deletes {plural(n, 'older image')} now, "
            "files included (favourites are kept). Delete them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def apply_preferences(self, prefs: Preferences) -> None:
        to_delete = self.prune_count(prefs.keep_limit)
        if to_delete and not self.confirm_prune(to_delete, prefs.keep_limit):
            prefs = prefs.replace(keep_limit=self.prefs.keep_limit)
            self.status("History limit unchanged; no image was deleted.")
        folder_changed = (prefs.output_folder or "") != (self.prefs.output_folder or "")
        self.prefs = prefs
        self.store.keep_limit = prefs.keep_limit or None
        self.worker.set_idle_unload(prefs.idle_unload_minutes)
        if folder_changed:
            self._use_output_folder(prefs.output_folder)
        if to_delete and self.store.keep_limit:
            try:
                removed = self.store.enforce_keep_limit()
            except UserFacingError as exc:
                self.show_error(str(exc), offer_logs=False, cause="history")
                removed = 0
            if removed:
                self.status(f"Deleted {plural(removed, 'older image')} to keep {prefs.keep_limit}.")
            self._after_prune()
        self._save_prefs()
        self.refresh_models()
        for service in (self.services.api, self.services.remote):
            if service is not None:
                service.apply(prefs)

    def _use_output_folder(self, folder: str) -> None:
        """Preferences changed the image folder: new images go there from the next job on."""
        from heyim_desktop.store.history import default_images_dir

        target = default_images_dir(folder)
        try:
            self.store.set_images_dir(target)
        except UserFacingError as exc:
            self.show_error(str(exc), offer_logs=False, cause="prefs")
            return
        self.status(f"New images are saved in {target}.")

    def _save_prefs(self) -> None:
        try:
            save_preferences(self.prefs)
        except OSError as exc:
            self.show_error(f"Could not save preferences: {exc.strerror or exc}", offer_logs=False, cause="prefs")

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

