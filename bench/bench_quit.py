"""How long HeyIm takes to quit after a job, with and without skipping Python's module teardown.

    .venv/bin/python bench/bench_quit.py [--runs 3]

Each run starts the app in a child process (offscreen, throwaway data folder), makes one 64x64
demo image (so torch and diffusers are loaded), then chooses File > Quit and reports the seconds
from that click until the process has exited. The peer in the same run is ``fast_exit=False``
(the interpreter's ordinary teardown).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time
from heyim_desktop.ui import app
from heyim_desktop.ui.qt import QTimer
orig = app.build_app
def build(*a, **k):
    p = orig(*a, **k)
    w = p.window
    w.use_demo_model(); w.settings_panel.set_size(64, 64); w.settings_panel.steps.setValue(2)
    w.prompt_panel.set_prompt("quit timing")
    def shown(_job):
        print("QUIT", time.time(), flush=True)
        QTimer.singleShot(0, w.quit_app)
    w.job_shown.connect(shown)
    QTimer.singleShot(200, w.generate)
    return p
app.build_app = build
sys.exit(app.run_app(["bench"], fast_exit=sys.argv[1] == "1"))
"""


def one(fast: bool) -> float:
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1",
               HEYIM_DATA_DIR=tempfile.mkdtemp(prefix="heyim-quit-"))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "1" if fast else "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    quit_at = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("QUIT"):
            quit_at = float(line.split()[1])
    proc.wait(timeout=300)
    end = time.time()
    if quit_at is None or proc.returncode != 0:
        raise SystemExit(f"the app did not quit cleanly (rc {proc.returncode})")
    return end - quit_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = {True: [], False: []}  # type: dict[bool, list[float]]
    for _ in range(args.runs):
        for fast in (True, False):
            rows[fast].append(one(fast))
    for fast, label in ((True, "fast exit (HeyIm)"), (False, "ordinary teardown (peer)")):
        times = rows[fast]
        print(f"{label:<26} median {statistics.median(times):.2f} s   runs: {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
