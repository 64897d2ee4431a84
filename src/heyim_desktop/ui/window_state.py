"""What the window remembers across launches.

Layout (geometry, splitters) lives in QSettings; the last-used prompt and settings live in
Preferences.last_settings, which headless front ends can read too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from heyim_desktop.ui.qt import QByteArray

if TYPE_CHECKING:
    from heyim_desktop.ui.window import MainWindow

log = logging.getLogger(__name__)


class WindowState:
    def __init__(self, window: MainWindow) -> None:
        self.window = window

    def restore(self) -> None:
        w, s = self.window, self.window.qsettings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            w.restoreGeometry(geometry)
        else:
            w.resize(1280, 820)
        splitter_defaults = {"window/main_split": [400, 880], "window/right_split": [480, 300],
                    "window/result_split": [620, 260]}
        for key, splitter in (("window/main_split", w.main_split), ("window/right_split", w.right_split),
                              ("window/result_split", w.result_split)):
            state = s.value(key)
            if isinstance(state, QByteArray) and not state.isEmpty():
                splitter.restoreState(state)
            else:
                splitter.setSizes(splitter_defaults[key])
        prefs = w.prefs
        defaults: dict[str, Any] = {"scheduler": prefs.default_scheduler, "steps": prefs.default_steps,
                                    "guidance": prefs.default_guidance}
        w.settings_panel.apply(defaults)
        last = dict(prefs.last_settings or {})
        last.pop("model", None)  # the picker already follows prefs.last_model
        if last:
            w.apply_settings(last)

    def remember_settings(self) -> dict[str, Any]:
        w = self.window
        values = w.settings_panel.values()
        values.update(prompt=w.prompt_panel.prompt.toPlainText(),
                      negative_prompt=w.prompt_panel.negative.toPlainText(),
                      style_selection=w.prompt_panel.style_picker.selected())
        if values.get("seed") is None:
            values.pop("seed")
        w.prefs = w.prefs.replace(last_settings=values, last_model=values.get("model") or w.prefs.last_model)
        return values

    def save(self) -> None:
        w, s = self.window, self.window.qsettings
        s.setValue("window/geometry", w.saveGeometry())
        s.setValue("window/main_split", w.main_split.saveState())
        s.setValue("window/right_split", w.right_split.saveState())
        s.setValue("window/result_split", w.result_split.saveState())
        s.sync()
        self.remember_settings()
