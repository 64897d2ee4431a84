"""The main window's input section: the input image, dropped images with settings, reusing a history entry's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heyim_desktop.ui.drop_panel import DroppedImage
from heyim_desktop.ui.qt import QApplication, QMessageBox
from heyim_desktop.ui.reveal import show_in_file_manager
from heyim_desktop.ui.window_parts import WindowParts

#: What to do with a dropped image that carries generation settings.
LOAD_SETTINGS, USE_AS_INPUT, CANCEL = "settings", "input", "cancel"


class InputSection(WindowParts):
    """MainWindow's input and reuse methods (a mixin: ``self`` is the window)."""

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
        box = QMessageBox(self.as_widget)
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
