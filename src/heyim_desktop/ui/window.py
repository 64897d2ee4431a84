"""The main window: panels on the left, the result and the history on the right.

The window only talks to the worker through the queue (``submit``) and the worker's signals,
so the tray's quick-generate box and the local API share the same path: they submit to
``window.queue`` and the results show up here and in history.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.core.loading import DEMO_REF
from heyim_desktop.store.preferences import Preferences, save_preferences
from heyim_desktop.ui.banners import Banner, NoModelCard
from heyim_desktop.ui.drop_panel import DropPanel, DroppedImage
from heyim_desktop.ui.history_panel import HistoryPanel
from heyim_desktop.ui.menus import build_menus
from heyim_desktop.ui.prompt_panel import PromptPanel
from heyim_desktop.ui.qt import (
    QCloseEvent,
    QDesktopServices,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSettings,
    QSplitter,
    Qt,
    QUrl,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.queue_panel import QueuePanel
from heyim_desktop.ui.result_view import ResultView, ShownImage, entry_caption
from heyim_desktop.ui.settings_panel import SettingsPanel
from heyim_desktop.ui.tasks import pil_to_qimage
from heyim_desktop.ui.window_state import WindowState

log = logging.getLogger(__name__)

#: What to do with a dropped image that carries generation settings.
LOAD_SETTINGS, USE_AS_INPUT, CANCEL = "settings", "input", "cancel"
#: Dropped files with these suffixes go to the Models window instead of the input panel.
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class MainWindow(QMainWindow):
    #: Emitted after the window applied a finished job (tests and the tray listen).
    job_shown = Signal(object)

    def __init__(self, *, queue: JobQueue, store: Any, prefs: Preferences, worker: Any,
                 settings: QSettings, list_models: Callable[[Preferences], list[Any]],
                 log_file: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("HeyIm")
        self.setAcceptDrops(True)
        self.queue, self.store, self.prefs, self.worker = queue, store, prefs, worker
        self.qsettings = settings
        self.list_models = list_models
        self.log_file = log_file
        self.models: list[Any] = []
        #: The model the user just picked: its recommended settings apply when it is ready.
        self._recommend_for: str | None = None
        #: Replaceable in tests: ask what to do with a dropped image that has settings.
        self.ask_dropped_settings: Callable[[DroppedImage], str] = self._ask_dropped_settings
        self.active_job: int | None = None
        self.models_window: Any = None
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
        self.result_view = ResultView()
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

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.prompt_panel, 2)
        left_layout.addWidget(self.settings_panel)
        left_layout.addWidget(self.drop_panel, 1)
        left_layout.addWidget(self.controlnet_panel)
        run_row = QHBoxLayout()
        run_row.addWidget(self.generate_button, 1)
        run_row.addWidget(self.cancel_button)
        left_layout.addLayout(run_row)
        left_layout.addWidget(self.queue_panel)
        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.addWidget(self.result_view)
        self.right_split.addWidget(self.history)
        self.right_split.setStretchFactor(0, 3)
        self.right_split.setStretchFactor(1, 2)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(1, 1)
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(self.banner)
        column.addWidget(self.no_model)
        column.addWidget(self.main_split, 1)
        self.setCentralWidget(central)
        self.statusBar().addPermanentWidget(self.model_state)

        build_menus(self)
        self._connect()
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
        self.settings_panel.refresh_models_button.clicked.connect(lambda: self.refresh_models())
        self.settings_panel.model.activated.connect(self._model_picked)
        self.drop_panel.decoded.connect(self._dropped)
        self.drop_panel.failed.connect(lambda msg: self.show_error(msg, offer_logs=False))
        self.drop_panel.input_changed.connect(self._input_changed)
        self.history.reuse_requested.connect(self.reuse_settings)
        self.history.use_as_input_requested.connect(self.use_as_input)
        self.history.open_requested.connect(self.result_view.show_entry)
        self.history.copy_requested.connect(self._copy_entry)
        self.history.reveal_requested.connect(self._reveal_entry)
        self.history.message.connect(self.status)
        self.result_view.message.connect(self.status)
        self.prompt_panel.style_picker.message.connect(self.status)
        self.no_model.add_folder_requested.connect(self.add_model_folder)
        self.no_model.download_model_requested.connect(self.open_models_window)
        self.no_model.enable_download(True)
        self.no_model.demo_requested.connect(self.use_demo_model)

    # -- status and errors ---------------------------------------------------------------
    def status(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)
        log.info("status: %s", text)

    def show_error(self, text: str, offer_logs: bool = True, kind: str = "error") -> None:
        actions: tuple[tuple[str, Callable[[], None]], ...] = (("Show Logs", self.show_logs),) if offer_logs else ()
        self.banner.show_message(text, kind, actions)

    def show_logs(self) -> None:
        if self.log_file is None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_file)))

    def about(self) -> None:
        from heyim_desktop import __version__

        QMessageBox.about(self, "About HeyIm",
                          f"HeyIm Desktop {__version__}\nLocal Stable Diffusion: nothing leaves this machine.")

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
        from heyim_desktop.ui.controlnet_panel import library_source

        self.controlnet_panel.refresh(library_source(self.prefs.model_folders))

    def _model_picked(self, _index: int) -> None:
        ref = self.settings_panel.model_ref()
        if ref:
            self.prefs = self.prefs.replace(last_model=ref)
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
            folder = QFileDialog.getExistingDirectory(self, "Add a folder with models")
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
            self.status(f"Found {len(found)} model(s) in {folder}.")
        else:
            self.show_error(f"No usable model found in {folder}. HeyIm reads diffusers folders (with a "
                            "model_index.json) and .safetensors checkpoints; File > Models... lists what it saw.",
                            offer_logs=False, kind="warning")

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
        self._stop_load_clock()
        self.model_state.setText(f"Ready: {info.model_name} on {info.engine_name} ({info.seconds:.1f} s)")
        self.prompt_panel.set_counter(info.count_tokens, info.capabilities)
        self._show_recommended(info)
        self.settings_panel.set_fixed_size(info.fixed_size)
        self.settings_panel.set_clip_skip_available(getattr(info, "supports_clip_skip", True))
        if self.active_job is None:
            self.result_view.end_job()

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

    def _model_failed(self, ref: str, message: str) -> None:
        self._stop_load_clock()
        self.model_state.setText("Model failed to load")
        self.prompt_panel.set_counter(None)
        self.result_view.end_job()
        self.show_error(f"Could not load the model {self._model_label(ref)}: {message}")

    def _model_label(self, ref: str) -> str:
        return next((m.name for m in self.models if m.ref == ref), Path(ref).name or ref)

    # -- generating ----------------------------------------------------------------------
    def build_request(self) -> Any:
        from heyim_desktop.core.request import GenerationRequest

        values = self.settings_panel.values()
        image = self.drop_panel.image
        if image is None:
            values.pop("strength")
        prompt, negative, styles = self.prompt_panel.final_prompts()  # the chosen styles applied
        return GenerationRequest(prompt=prompt, negative_prompt=negative, styles=styles,
                                 init_image=image, **values, **self.drop_panel.edit_fields(),
                                 controlnets=self.controlnet_panel.units())

    def generate(self) -> Job | None:
        if not self.settings_panel.model_ref():
            self.no_model.show()
            self.show_error("Choose a model first: add a model folder, or try the demo model.",
                            offer_logs=False, kind="warning")
            return None
        if self.drop_panel.busy:
            self.status("Still reading the input image...")
            return None
        try:
            request = self.build_request()
        except InvalidRequest as exc:
            hint = "Type a prompt first." if exc.field == "prompt" else str(exc)
            self.show_error(hint, offer_logs=False, kind="warning")
            if exc.field == "prompt":
                self.prompt_panel.prompt.setFocus()
            return None
        return self.submit(request)

    def submit(self, request: Any, source: str = "app") -> Job | None:
        """Queue a request (the tray and other front ends may call this too)."""
        remote = getattr(self, "remote_queue", None)
        if source == "app" and remote is not None and remote.active:
            remote.submit(request)  # Preferences: render on a Redis queue; results come back to history
            self.state.remember_settings()
            return None
        try:
            job = self.queue.submit(request, source=source)
        except UserFacingError as exc:
            self.show_error(str(exc), offer_logs=False)
            return None
        if self.banner.isVisible() and self.banner.kind != "info":
            self.banner.dismiss()
        self.state.remember_settings()
        waiting = len(self.queue.pending())
        if waiting:
            self.status(f"Queued ({waiting} waiting).")
        return job

    def cancel(self) -> None:
        if self.queue.cancel_running():
            self.status("Cancelling...")

    def _job_started(self, job: Job) -> None:
        self.active_job = int(job.id)
        self.cancel_button.setEnabled(True)
        self.result_view.start_job("Starting...")

    def _progress(self, job_id: int, done: int, total: int, elapsed: float) -> None:
        if job_id == self.active_job:
            self.result_view.set_progress(done, total, elapsed)

    def _preview(self, job_id: int, image: Any) -> None:
        if job_id == self.active_job:
            self.result_view.set_preview(image)

    def _job_ended(self, job: Job) -> bool:
        if self.active_job != int(job.id):
            return False
        self.active_job = None
        self.cancel_button.setEnabled(False)
        self.result_view.end_job()
        return True

    def _job_finished(self, job: Job) -> None:
        self._job_ended(job)
        result = job.result
        entries = list(job.saved)
        if result is not None:
            shown = []
            for i, item in enumerate(result.images):
                entry = entries[i] if i < len(entries) and hasattr(entries[i], "path") else None
                shown.append(ShownImage(pil_to_qimage(item.image), entry.path if entry else None, entry,
                                        entry_caption(entry) if entry else f"Seed {item.seed}"))
            self.result_view.show_images(shown)
            t = result.timings.get("total", 0.0)
            self.status(f"Done: {len(result.images)} image(s) in {t:.1f} s, seed {result.request.seed}.")
            if result.warnings:
                self.show_error("\n".join(result.warnings), offer_logs=False, kind="warning")
        self.history.model.add_entries([e for e in entries if hasattr(e, "id")])
        self.job_shown.emit(job)

    def _job_failed(self, job: Job, message: str) -> None:
        self._job_ended(job)
        self.show_error(message)
        self.job_shown.emit(job)

    def _job_cancelled(self, job: Job) -> None:
        if self._job_ended(job) or job.started is not None:
            self.status("Cancelled; nothing was saved.")
        self.job_shown.emit(job)

    # -- input image, reuse --------------------------------------------------------------
    def _input_changed(self, dropped: DroppedImage | None) -> None:
        from heyim_desktop.core.schedulers import DEFAULT_IMG2IMG

        img2img = dropped is not None
        self.settings_panel.set_img2img(img2img)
        self.generate_button.setText("Generate from Image" if img2img else "Generate")
        # The original design used PNDM for image-to-image: switch only from the default.
        sched = self.settings_panel.scheduler
        if img2img and sched.currentText() == self.prefs.default_scheduler:
            sched.setCurrentText(DEFAULT_IMG2IMG)
        elif not img2img and sched.currentText() == DEFAULT_IMG2IMG:
            sched.setCurrentText(self.prefs.default_scheduler)

    def _dropped(self, dropped: DroppedImage) -> None:
        if dropped.parameters is not None and not dropped.from_history:
            choice = self.ask_dropped_settings(dropped)
            if choice == LOAD_SETTINGS:
                self.apply_settings(dropped.parameters.request_settings())
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

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Prompt and every setting back into the panels (history, a dropped PNG, last session)."""
        if "prompt" in settings:
            self.prompt_panel.set_prompt(settings.get("prompt") or "", settings.get("negative_prompt") or "")
            # An image's prompt already has its styles in it; only the last session remembers ticks.
            chosen = settings.get("style_selection")
            self.prompt_panel.style_picker.set_selected(
                [n for n in chosen if isinstance(n, str)] if isinstance(chosen, list) else [])
        model = settings.get("model")
        if isinstance(model, str) and model and not self.settings_panel.select_model(model):
            match = next((m for m in self.models if m.name == model or Path(m.ref).name == model), None)
            if match is not None:
                settings = dict(settings, model=match.ref)
        self.settings_panel.apply(settings)

    def reuse_settings(self, entry: Any) -> None:
        self.apply_settings(entry.request_settings())
        self.controlnet_panel.apply((entry.settings or {}).get("controlnet") or [])
        self.status("Settings loaded from history.")

    def use_as_input(self, entry: Any) -> None:
        self.drop_panel.load_file(Path(entry.path), from_history=True)

    def _copy_entry(self, entry: Any) -> None:
        from heyim_desktop.ui.qt import QApplication, QImage
        from heyim_desktop.ui.result_view import image_mime

        QApplication.clipboard().setMimeData(image_mime(QImage(str(entry.path)), Path(entry.path)))
        self.status("Image copied to the clipboard.")

    def _reveal_entry(self, entry: Any) -> None:
        from heyim_desktop.ui.result_view import show_in_file_manager

        show_in_file_manager(Path(entry.path))

    # -- preferences ---------------------------------------------------------------------
    def open_preferences(self) -> None:
        from heyim_desktop.ui.preferences_dialog import PreferencesDialog

        dialog = PreferencesDialog(self.prefs, self)
        if dialog.exec():
            self.apply_preferences(dialog.result_preferences())

    def apply_preferences(self, prefs: Preferences) -> None:
        self.prefs = prefs
        self.store.keep_limit = prefs.keep_limit or None
        self._save_prefs()
        self.refresh_models()
        for service in (getattr(self, "api_service", None), getattr(self, "remote_queue", None)):
            if service is not None:
                service.apply(prefs)

    def _save_prefs(self) -> None:
        try:
            save_preferences(self.prefs)
        except OSError as exc:
            self.show_error(f"Could not save preferences: {exc.strerror or exc}", offer_logs=False)

    # -- drops anywhere in the window go to the input panel ------------------------------
    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self.drop_panel.dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self.drop_panel.dragMoveEvent(event)

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        from heyim_desktop.ui.drop_panel import local_files

        files = local_files(event.mimeData())
        if files and files[0].suffix.lower() in MODEL_SUFFIXES:
            # A model file, not a picture: the Models window imports it (checked copy, no unpickling).
            self.open_models_window().import_file(str(files[0]))
            event.acceptProposedAction()
            return
        self.drop_panel.dropEvent(event)

    def quit_app(self) -> None:
        """File > Quit: always quits, even when closing the window would only hide it."""
        from heyim_desktop.ui.qt import QApplication

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
        super().closeEvent(event)
