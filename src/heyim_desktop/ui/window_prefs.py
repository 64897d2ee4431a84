"""The main window's preferences section: applying them (history limit, image folder, services), saving them."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.store.preferences import Preferences, save_preferences
from heyim_desktop.ui.generate import plural
from heyim_desktop.ui.qt import QMessageBox
from heyim_desktop.ui.reveal import open_path
from heyim_desktop.ui.window_parts import WindowParts


class PrefsSection(WindowParts):
    """MainWindow's preferences and output-folder methods (a mixin: ``self`` is the window)."""

    # -- output folder -------------------------------------------------------------------
    def output_folder(self) -> Path:
        return Path(self.store.images_dir)

    def open_output_folder(self) -> None:
        folder = self.output_folder()
        folder.mkdir(parents=True, exist_ok=True)
        if not open_path(folder):
            self.say_where("the image folder", folder)

    # -- preferences ---------------------------------------------------------------------
    def open_preferences(self) -> None:
        from heyim_desktop.ui.preferences_dialog import PreferencesDialog

        dialog = PreferencesDialog(self.prefs, self.as_widget)
        if dialog.exec():
            self.apply_preferences(dialog.result_preferences())

    def prune_count(self, limit: int) -> int:
        """How many images a keep-limit of ``limit`` deletes now (favourites are always kept)."""
        if limit <= 0:
            return 0
        return max(0, int(self.store.count()) - int(self.store.count(favourites_only=True)) - limit)

    def _confirm_prune(self, n: int, limit: int) -> bool:
        answer = QMessageBox.question(
            self.as_widget, "Keep in history",
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
