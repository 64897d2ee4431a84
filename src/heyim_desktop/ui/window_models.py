"""The main window's models section: the picker's list, picking and loading, and what a loaded model changes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from heyim_desktop.core.loading import DEMO_REF
from heyim_desktop.ui.generate import plural
from heyim_desktop.ui.qt import QFileDialog
from heyim_desktop.ui.window_parts import WindowParts

log = logging.getLogger(__name__)


class ModelsSection(WindowParts):
    """MainWindow's model methods (a mixin: ``self`` is the window)."""

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

            folder = QFileDialog.getExistingDirectory(self.as_widget, "Add a folder with models", str(start_folder("folder")))
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

            self.models_window = ModelsWindow(ModelLibrary(self.prefs.model_folders), self.as_widget)
            self.models_window.modelsChanged.connect(lambda: self.refresh_models())
            self.models_window.foldersChanged.connect(self._model_folders_changed)
            self.models_window.modelChosen.connect(self.choose_model)
            self.models_window.textEncoderChosen.connect(self._text_encoder_chosen)
        self.models_window.text_encoders = dict(self.prefs.text_encoders)
        self.models_window.refresh()
        self.models_window.show()
        self.models_window.raise_()
        self.models_window.activateWindow()
        return self.models_window

    def _text_encoder_chosen(self, ref: str, path: str) -> None:
        """Keep the GGUF text encoder chosen for ``ref`` ("" : none) and unload the model if it is loaded,
        so the next job loads it with the new text encoder."""
        chosen = {k: v for k, v in self.prefs.text_encoders.items() if k != ref}
        if path:
            chosen[ref] = path
        self.prefs = self.prefs.replace(text_encoders=chosen)
        self._save_prefs()
        if self.models_window is not None:
            self.models_window.text_encoders = dict(chosen)
        if self.worker.current_model == ref:
            self.worker.unload_model()

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
        memory = getattr(getattr(info, "info", None), "memory", "")
        self.model_state.setText(f"Ready: {info.model_name} on {info.engine_name} ({info.seconds:.1f} s)"
                                 + (f"; {memory}" if memory else ""))
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
        text = f"Could not load the model {self._model_label(ref)}: {message}"
        if self.prefs.device in ("cuda", "mps"):  # a chosen GPU may be the cause: one click to change it
            self.banner.show_message(text, "error", (("Preferences...", self.open_preferences),
                                                     ("Show Logs", self.show_logs)), cause="model")
        else:
            self.show_error(text, cause="model")

    def _model_unloaded(self, ref: str, why: str) -> None:
        self.model_state.setText("No model loaded")
        self.prompt_panel.set_counter(None)
        when = "after the idle time set in Preferences" if why == "idle" else "as asked"
        self.status(f"Model {self._model_label(ref)} unloaded {when}; its memory is back with the system.")

    def _model_label(self, ref: str) -> str:
        return next((m.name for m in self.models if m.ref == ref), Path(ref).name or ref)
