"""The window over a real engine process: a killed engine costs one job; torch stays out of the GUI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals by PID are POSIX")

KILLED = "The engine stopped unexpectedly (killed by signal 9, likely out of memory). It restarts for the next job."


@pytest.fixture()
def app_parts(qtbot, data_dir: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The app exactly as launched: models load in an engine process."""
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.logs import teardown_logging

    p = build_app(["heyim-test"])
    qtbot.addWidget(p.window)
    qtbot.waitExposed(p.window)
    yield p
    p.app.aboutToQuit.disconnect(p.shutdown)
    p.shutdown()
    p.window.close()
    teardown_logging()


def test_killing_the_engine_mid_job_costs_that_job_only_and_unload_ends_it(app_parts, qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.process.remote import RemoteEngine

    parts = app_parts
    window, worker = parts.window, parts.worker
    quick_settings(window, steps=150)
    window.prompt_panel.set_prompt("kill the engine")
    pids: list[int] = []

    def kill_once(*_args: object) -> None:
        engine = worker.host.engine
        if not pids and isinstance(engine, RemoteEngine):
            pids.append(engine.pid)
            os.kill(engine.pid, signal.SIGKILL)  # by PID, as the OOM killer would

    worker.progress.connect(kill_once)
    shown: list[object] = []
    window.job_shown.connect(shown.append)
    first = window.generate()
    window.settings_panel.steps.setValue(2)
    window.prompt_panel.set_prompt("after the crash")
    second = window.generate()  # waits in the queue while the first one dies
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=GEN_TIMEOUT_MS)
    assert first.state is JobState.FAILED and first.error_message == KILLED
    assert second.state is JobState.DONE, second.error_message
    assert window.isVisible()
    assert parts.store.count() == 1
    engine = worker.host.engine
    assert isinstance(engine, RemoteEngine) and engine.pid not in pids and engine.pid != os.getpid()
    # The model was loaded afresh for the second job, and the token counter asks the new child.
    qtbot.waitUntil(lambda: not window.prompt_panel.prompt_tokens.text().startswith("~"), timeout=GEN_TIMEOUT_MS)
    assert window.prompt_panel.prompt_tokens.count is not None and window.prompt_panel.prompt_tokens.count.exact

    # Generate > Unload Model ends the engine process: the model's memory goes back to the system.
    process = engine.process
    with qtbot.waitSignal(worker.model_unloaded, timeout=GEN_TIMEOUT_MS) as blocker:
        window.unload_action.trigger()
    assert blocker.args == ["demo", "asked"]
    assert not process.alive and worker.host.engine is None
    assert window.model_state.text() == "No model loaded" and window.prompt_panel.counter is None


def test_idle_unload_after_the_preference_time(parts, qtbot) -> None:  # type: ignore[no-untyped-def]
    window, worker = parts.window, parts.worker
    quick_settings(window)
    window.apply_preferences(window.prefs.replace(idle_unload_minutes=1))
    assert worker.idle_unload_s == 60
    window.prompt_panel.set_prompt("idle")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS):
        window.generate()
    worker.idle_unload_s = 0.05  # the minute, shortened for the test
    with qtbot.waitSignal(worker.model_unloaded, timeout=GEN_TIMEOUT_MS) as blocker:
        pass
    assert blocker.args == ["demo", "idle"] and worker.host.engine is None


_NO_TORCH = r"""
import json, sys
import psutil
from PIL import Image
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.upscale_job import UpscaleRequest
from heyim_desktop.ui.app import build_app

HEAVY = ("torch", "diffusers", "transformers", "coremltools", "spandrel")
ESRGAN = sys.argv[1]
p = build_app(["t"], show=False)
seen = {"during": {}, "runner": {}}

def during(job_id, *_):
    if job_id not in seen["during"]:
        seen["during"][job_id] = [m for m in HEAVY if m in sys.modules]
        seen["rss_mb"] = max(seen.get("rss_mb", 0), psutil.Process().memory_info().rss / 2**20)
        host = p.worker.host
        seen["runner"][job_id] = "model" if host.engine is not None else "upscaler" if host.upscaler is not None else "?"

def run(request):
    job = p.queue.submit(request)
    while not job.wait(0.01):
        p.app.processEvents()
    p.app.processEvents()
    seen.setdefault("states", []).append(job.state.value)
    seen.setdefault("sizes", []).append(list(job.result.images[0].image.size) if job.result else None)
    return job

p.worker.progress.connect(during)
source = Image.new("RGB", (40, 30), (200, 40, 90))
# No model loaded yet: the upscale runs in a model-less engine process.
run(UpscaleRequest(image=source, scale=2.0, upscaler="tiny", upscaler_path=ESRGAN, tile_preference=32))
run(GenerationRequest("a fox", steps=3, width=64, height=64, model="demo", seed=1))
# With the model loaded, in its process.
run(UpscaleRequest(image=source, scale=2.0, upscaler="tiny", upscaler_path=ESRGAN, tile_preference=32))
seen["after"] = [m for m in HEAVY if m in sys.modules]
p.shutdown()
print("RESULT " + json.dumps(seen))
"""


def test_the_gui_process_never_imports_torch_while_generating_or_upscaling(data_dir: Path, tmp_path: Path) -> None:
    from tiny_upscaler import make_esrgan

    esrgan = make_esrgan(tmp_path, 2)[0]  # built here: the GUI process must not import torch
    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, str(esrgan)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    seen = json.loads(line[len("RESULT "):])
    assert seen["states"] == ["done", "done", "done"], out.stderr[-3000:]
    assert seen["sizes"] == [[80, 60], [64, 64], [80, 60]]
    assert list(seen["runner"].values()) == ["upscaler", "model", "model"]
    assert all(mods == [] for mods in seen["during"].values()) and len(seen["during"]) == 3
    assert seen["after"] == []
    assert seen["rss_mb"] < 250, seen
