"""Screenshots of the main-screen additions of issue 14 into docs/screenshots/ (offscreen, demo model).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/main_screen_screenshots.py

10: the image info panel beside a result, 11: the aspect-ratio picker open, 12: the full-screen
viewer zoomed in, 13: a history search with no matches. Uses a throwaway data folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_screenshots import OUT, pump, settle  # noqa: E402 - the shared helpers, after the path is set


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["HEYIM_DATA_DIR"] = tempfile.mkdtemp(prefix="heyim-shots-")
    OUT.mkdir(parents=True, exist_ok=True)
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.qt import QPixmap

    parts = build_app(["screenshots"])
    app, w = parts.app, parts.window
    w.resize(1280, 820)
    w.banner.dismiss()
    w.use_demo_model()
    w.prompt_panel.set_prompt("a lighthouse at dusk, oil painting, dramatic clouds", "blurry, lowres")
    w.settings_panel.set_size(256, 256)
    w.settings_panel.steps.setValue(8)
    w.settings_panel.count.setValue(3)
    w.settings_panel.set_seed(4242, locked=True)
    finished: list[object] = []
    w.job_shown.connect(finished.append)
    w.generate()
    pump(app, lambda: bool(finished))
    w.result_split.setSizes([760, 300])
    settle(app, 1.0)
    w.grab().save(str(OUT / "10-image-info.png"))

    w.settings_panel.aspect.showPopup()
    settle(app, 0.5)
    # The popup is its own window: paint the window, then the popup's list where it opened.
    shot = w.grab()
    popup = w.settings_panel.aspect.view().window()
    offset = w.mapFromGlobal(popup.mapToGlobal(popup.rect().topLeft()))
    from heyim_desktop.ui.qt import QPainter

    painter = QPainter(shot)
    painter.drawPixmap(offset, popup.grab())
    painter.end()
    shot.save(str(OUT / "11-aspect-picker.png"))
    w.settings_panel.aspect.hidePopup()

    viewer = w.open_viewer()
    viewer.showNormal()
    viewer.resize(1100, 760)
    settle(app, 0.5)
    viewer.view.zoom_by(2.0)
    settle(app, 0.3)
    viewer.grab().save(str(OUT / "12-full-screen-viewer.png"))
    viewer.close()

    w.history.search.setText("whale")
    pump(app, lambda: w.history.no_matches.isVisible())
    settle(app, 0.3)
    w.grab().save(str(OUT / "13-empty-search.png"))
    del QPixmap
    parts.shutdown()


if __name__ == "__main__":
    main()
