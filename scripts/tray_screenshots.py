"""Save screenshots of the tray's Quick Generate box, its menu and Preferences (offscreen, demo model).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/tray_screenshots.py

Uses a throwaway data folder. Offscreen there is no real tray, so the menu is grabbed as a widget
(the menu and its Recent Images submenu side by side) rather than from a menu bar.
"""

from __future__ import annotations

import os
import sys
import tempfile

from ui_screenshots import OUT, pump  # same folder: the screenshot helpers live there


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["HEYIM_DATA_DIR"] = tempfile.mkdtemp(prefix="heyim-tray-shots-")
    OUT.mkdir(parents=True, exist_ok=True)
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog
    from heyim_desktop.ui.qt import QColor, QPainter, QPixmap

    parts = build_app(["screenshots"])
    app, w, tray = parts.app, parts.window, parts.tray
    w.use_demo_model()
    w.settings_panel.set_size(128, 128)
    w.settings_panel.steps.setValue(4)
    done: list[object] = []
    tray.quick_done.connect(done.append)
    for prompt in ("a lighthouse at dusk", "portrait of a cat, oil painting", "neon street market in the rain"):
        tray.quick_generate(prompt)
        n = len(done) + 1
        pump(app, lambda n=n: len(done) >= n)

    tray.open_quick_box()
    tray.box.prompt.setText("a red fox in the snow, golden hour")
    tray.box.adjustSize()
    pump(app, lambda: True)
    tray.box.grab().save(str(OUT / "06-quick-generate.png"))
    tray.box.hide()

    tray.menu.aboutToShow.emit()
    menus = [tray.menu, tray.recent_menu]
    for m in menus:
        m.adjustSize()
    shots = [m.grab() for m in menus]
    canvas = QPixmap(sum(s.width() for s in shots) + 8, max(s.height() for s in shots))
    canvas.fill(QColor(0, 0, 0, 0))
    painter = QPainter(canvas)
    painter.drawPixmap(0, 0, shots[0])
    painter.drawPixmap(shots[0].width() + 8, 0, shots[1])
    painter.end()
    canvas.save(str(OUT / "07-tray-menu.png"))

    dialog = PreferencesDialog(w.prefs, w)
    dialog.adjustSize()
    dialog.grab().save(str(OUT / "08-preferences-tray.png"))
    parts.shutdown()
    print("\n".join(str(OUT / n) for n in ("06-quick-generate.png", "07-tray-menu.png", "08-preferences-tray.png")))


if __name__ == "__main__":
    sys.exit(main())
