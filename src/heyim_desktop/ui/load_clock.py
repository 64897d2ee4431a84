"""The model-state label while a model loads: elapsed seconds, and a note for slow Core ML first loads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from heyim_desktop.ui.qt import QLabel, QObject, QTimer


class LoadClock(QObject):
    def __init__(self, label: QLabel, name_of: Callable[[str], str]) -> None:
        super().__init__(label)
        self.label, self.name_of = label, name_of
        self.ref, self.since = "", 0.0
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.tick)

    def start(self, ref: str) -> None:
        self.ref, self.since = ref, time.monotonic()
        self.timer.start()
        self.tick()

    def stop(self) -> None:
        self.timer.stop()

    def tick(self) -> None:
        from heyim_desktop.core.coreml.detect import looks_like_coreml_folder

        text = f"Loading model {self.name_of(self.ref)}... {time.monotonic() - self.since:.0f} s"
        if self.ref != "demo" and looks_like_coreml_folder(Path(self.ref)):
            from heyim_desktop.core.coreml.runtime import FIRST_LOAD_NOTE

            text += f"  ({FIRST_LOAD_NOTE})"
        self.label.setText(text)
