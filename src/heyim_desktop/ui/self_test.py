"""``heyim-desktop --self-test``: prove a build works end to end, without touching the user's data.

It opens the real window in a throwaway data folder, runs the tiny demo model once through the
real worker and queue, and checks that the image landed in history. The packaged app's smoke
script runs it offscreen (``QT_QPA_PLATFORM=offscreen``); it needs no model download.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from heyim_desktop.core import paths

log = logging.getLogger(__name__)

#: The demo model at this size and step count makes an image in well under a second on a CPU.
SELF_TEST_SIZE = 64
SELF_TEST_STEPS = 2


class SelfTestFailed(Exception):
    """A step of the self-test did not do what it should; the message says which."""


def run_self_test(timeout_s: float = 300.0, keep_dir: bool = False) -> int:
    """Run the self-test; 0 on success, 1 (with a one-line message on stderr) on failure."""
    import sys

    previous = os.environ.get(paths.DATA_DIR_ENV)
    root = Path(tempfile.mkdtemp(prefix="heyim-self-test-"))
    os.environ[paths.DATA_DIR_ENV] = str(root)
    try:
        seconds = _run(root, timeout_s)
    except SelfTestFailed as exc:
        sys.stderr.write(f"heyim-desktop: self-test FAILED: {exc}\n")
        return 1
    finally:
        if previous is None:
            os.environ.pop(paths.DATA_DIR_ENV, None)
        else:
            os.environ[paths.DATA_DIR_ENV] = previous
        if not keep_dir:
            shutil.rmtree(root, ignore_errors=True)
    sys.stdout.write(f"heyim-desktop: self-test passed: window, worker, demo model and history "
                     f"({seconds:.1f} s)\n")
    return 0


def _run(root: Path, timeout_s: float) -> float:
    import time

    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.logs import teardown_logging

    t0 = time.perf_counter()
    parts = build_app(["heyim-desktop"], show=True)
    try:
        window = parts.window
        if not window.isVisible():
            raise SelfTestFailed("the main window did not open")
        window.use_demo_model()
        window.settings_panel.set_size(SELF_TEST_SIZE, SELF_TEST_SIZE)
        window.settings_panel.steps.setValue(SELF_TEST_STEPS)
        window.settings_panel.count.setValue(1)
        window.prompt_panel.set_prompt("HeyIm self-test")
        finished = _wait_for_job(parts, window.generate, timeout_s)
        if finished is None:
            raise SelfTestFailed(f"no image after {timeout_s:.0f} s")
        if finished.error_message:
            raise SelfTestFailed(f"the job failed: {finished.error_message}")
        if finished.state.value != "done":
            raise SelfTestFailed(f"the job ended {finished.state.value}")
        if parts.store.count() < 1:
            raise SelfTestFailed("the image did not reach history")
        entry = parts.store.page(0, 1)[0]
        if not Path(entry.path).is_file() or not Path(entry.path).resolve().is_relative_to(root.resolve()):
            raise SelfTestFailed(f"the history image is missing or outside the test folder: {entry.path}")
        return time.perf_counter() - t0
    finally:
        try:
            parts.app.aboutToQuit.disconnect(parts.shutdown)
        except (RuntimeError, TypeError):  # already disconnected
            pass
        parts.shutdown()
        parts.window.close()
        teardown_logging()


def _wait_for_job(parts: Any, start: Any, timeout_s: float) -> Any:
    """Start a job and spin the event loop until the window has shown its outcome."""
    from heyim_desktop.ui.qt import QEventLoop, QTimer

    loop = QEventLoop()
    outcome: dict[str, Any] = {}

    def shown(job: Any) -> None:
        if job is outcome.get("job"):
            outcome["done"] = job
            loop.quit()

    parts.window.job_shown.connect(shown)
    job = start()
    if job is None:
        raise SelfTestFailed("the window did not queue the job (no model or no prompt?)")
    outcome["job"] = job
    if job.state.finished:  # finished before we listened
        return job
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    parts.window.job_shown.disconnect(shown)
    return outcome.get("done")
