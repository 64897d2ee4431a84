"""Save screenshots of the main window's states into docs/screenshots/ (offscreen, demo model).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/ui_screenshots.py

States: first launch without a model, generating with the live preview, a result, the history
with many items, and an error. Uses a throwaway data folder; the demo model makes noise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def pump(app, predicate, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.005)


def settle(app, seconds: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    pump(app, lambda: time.monotonic() > end)


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = tempfile.mkdtemp(prefix="heyim-shots-")
    os.environ["HEYIM_DATA_DIR"] = tmp
    OUT.mkdir(parents=True, exist_ok=True)
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.ui.app import build_app

    parts = build_app(["screenshots"])
    app, w = parts.app, parts.window
    w.resize(1280, 820)
    settle(app, 1.0)
    w.grab().save(str(OUT / "01-first-launch.png"))

    # Generating: grab the window from the preview handler, mid-way through the steps.
    w.use_demo_model()
    w.prompt_panel.set_prompt("a red fox in the snow, golden hour, detailed fur", "blurry, lowres")
    w.settings_panel.set_size(256, 256)
    w.settings_panel.steps.setValue(30)
    shot: list[int] = []

    def on_progress(_job_id: int, done: int, total: int, _elapsed: float) -> None:
        if not shot and done >= total // 2:
            shot.append(done)
            app.processEvents()
            w.grab().save(str(OUT / "02-generating.png"))

    parts.worker.progress.connect(on_progress)
    finished: list[object] = []
    w.job_shown.connect(finished.append)
    w.generate()
    pump(app, lambda: bool(finished))
    parts.worker.progress.disconnect(on_progress)
    settle(app, 1.0)
    w.grab().save(str(OUT / "03-result.png"))

    # Many items: a few batches from the demo model.
    prompts = ["a lighthouse at dusk", "portrait of a cat, oil painting", "neon street market in the rain",
               "mountain lake at sunrise", "a robot reading in a library", "watercolor flower field"]
    for prompt in prompts:
        finished.clear()
        w.submit(GenerationRequest(prompt, steps=6, width=128, height=128, count=6, model="demo"))
        pump(app, lambda: bool(finished))
    w.right_split.setSizes([300, 480])
    w.history.select_row(0)
    settle(app, 2.0)
    w.grab().save(str(OUT / "04-history.png"))

    # An error: a damaged file dropped as input.
    bad = Path(tmp) / "holiday-photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    w.drop_panel.load_file(bad)
    pump(app, w.banner.isVisible)
    settle(app, 0.3)
    w.grab().save(str(OUT / "05-error.png"))
    parts.shutdown()
    print("\n".join(str(p) for p in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    sys.exit(main())
