"""What the main window's sections share: the window's parts, declared for the type checker.

:class:`~heyim_desktop.ui.window.MainWindow` is built from section mixins (models, jobs,
input, preferences) over ``QMainWindow``. Each section reads the parts the window makes in
its ``__init__`` and calls the other sections; this base declares those names and types so
mypy can check every section on its own. At run time it is an empty class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.ui.qt import QWidget


class WindowParts:
    """The base of MainWindow's section mixins (ui.window_models, _jobs, _input, _prefs)."""

    @property
    def as_widget(self) -> QWidget:
        """The window itself, as the parent of the dialogs a section opens."""
        assert isinstance(self, QWidget)
        return self

    if TYPE_CHECKING:
        from heyim_desktop.core.jobs import Job, JobQueue
        from heyim_desktop.store.preferences import Preferences
        from heyim_desktop.ui.banners import Banner, NoModelCard
        from heyim_desktop.ui.controlnet_panel import ControlNetPanel
        from heyim_desktop.ui.drop_panel import DropPanel, DroppedImage
        from heyim_desktop.ui.generate import JobRouter
        from heyim_desktop.ui.history_panel import HistoryPanel
        from heyim_desktop.ui.image_info import ImageInfoPanel
        from heyim_desktop.ui.inpainting import Inpainting
        from heyim_desktop.ui.menus import WindowActions
        from heyim_desktop.ui.prompt_panel import PromptPanel
        from heyim_desktop.ui.qt import QLabel, QPushButton
        from heyim_desktop.ui.result_view import ResultView
        from heyim_desktop.ui.settings_panel import SettingsPanel
        from heyim_desktop.ui.upscaling import Upscaling
        from heyim_desktop.ui.window_state import WindowState

        # What the window holds (made in MainWindow.__init__).
        queue: JobQueue
        store: Any
        prefs: Preferences
        worker: Any
        services: Any
        router: JobRouter
        list_models: Callable[[Preferences], list[Any]]
        models: list[Any]
        model_caps: Any
        active_job: Job | None
        models_window: Any
        viewer: Any
        state: WindowState
        menu_actions: WindowActions
        upscaling: Upscaling
        inpainting: Inpainting
        lora_picker: Any
        job_shown: Any  # a Signal(object)
        ask_dropped_settings: Callable[[DroppedImage], str]
        confirm_prune: Callable[[int, int], bool]
        _recommend_for: str | None
        # Its widgets.
        prompt_panel: PromptPanel
        settings_panel: SettingsPanel
        drop_panel: DropPanel
        controlnet_panel: ControlNetPanel
        result_view: ResultView
        info_panel: ImageInfoPanel
        history: HistoryPanel
        banner: Banner
        no_model: NoModelCard
        generate_button: QPushButton
        cancel_button: QPushButton
        model_state: QLabel

        # What the window and the other sections do.
        def status(self, text: str) -> None: ...
        def show_error(self, text: str, offer_logs: bool = True, kind: str = "error", cause: str = "") -> None: ...
        def say_where(self, what: str, path: Path) -> None: ...
        def show_logs(self) -> None: ...
        def refresh_models(self, initial: bool = False) -> None: ...
        def open_preferences(self) -> None: ...
        def _save_prefs(self) -> None: ...
        def _after_prune(self) -> None: ...
