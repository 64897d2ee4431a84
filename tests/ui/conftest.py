"""Fixtures for the window tests: a whole app (store, queue, worker, window) in a private data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult

GEN_TIMEOUT_MS = 120_000  # a 2-core CI box under load; normally a few seconds


@pytest.fixture()
def parts(qtbot, data_dir: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.logs import teardown_logging

    # The engine in the test process: window tests stay fast (an engine process costs a torch
    # import per test); models still load through the app's own loader, Preferences' device
    # included. tests/core/process and tests/ui/test_engine_process_window.py run the real child.
    p = build_app(["heyim-test"], in_process_engine=True)
    qtbot.addWidget(p.window)
    qtbot.waitExposed(p.window)
    yield p
    p.app.aboutToQuit.disconnect(p.shutdown)
    p.shutdown()
    p.window.close()
    teardown_logging()


@pytest.fixture()
def window(parts):  # type: ignore[no-untyped-def]
    return parts.window


def make_result(prompt: str = "a red fox", seed: int = 1, count: int = 1, **kw: object) -> GenerationResult:
    from PIL import Image

    req = GenerationRequest(prompt=prompt, seed=seed, count=count, width=64, height=64, **kw)  # type: ignore[arg-type]
    images = tuple(GeneratedImage(Image.new("RGB", (64, 64), ((seed * 37) % 255, 90, 10)), s, i)
                   for i, s in enumerate(req.image_seeds()))
    return GenerationResult(req, images, "tiny", "torch-cpu", {"total": 0.1})


def quick_settings(window, steps: int = 2) -> None:  # type: ignore[no-untyped-def]
    """The demo model at 64x64 and a couple of steps: a job takes well under a second."""
    window.use_demo_model()
    window.settings_panel.set_size(64, 64)
    window.settings_panel.steps.setValue(steps)
    window.settings_panel.count.setValue(1)


@pytest.fixture(scope="session", autouse=True)
def _clear_clipboard_at_exit() -> Iterator[None]:
    """Offscreen Qt keeps clipboard data in a global static that is destroyed after the
    QApplication; a QMimeData left there (Copy Image, Quick Generate) crashes the interpreter
    at exit (rc 139) although every test passed. Empty the clipboard while Qt is still alive."""
    yield
    from heyim_desktop.ui.qt import QApplication

    if QApplication.instance() is not None:
        QApplication.clipboard().clear()
