"""Launch-to-window time and the app's memory before the first generation.

Starts the app in a fresh process (offscreen unless a display is set) with a private data
folder, several times, and prints: time from process start to the window being shown and
painted, the in-process part (imports + building the window), RSS once the event loop is idle,
and whether torch was imported (it must not be before the first generation).

    .venv/bin/python bench/bench_launch.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, json
t_imports = time.perf_counter()
from heyim_desktop.ui.app import build_app
parts = build_app([sys.argv[0]])
from heyim_desktop.ui.qt import QTimer

def shown():
    parts.window.repaint()  # the first frame is painted
    t_window = time.perf_counter()
    def report():
        import psutil
        rss = psutil.Process().memory_info().rss
        heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
        print(json.dumps({"in_process": t_window - t_imports, "wall_end": time.time(), "rss": rss,
                          "heavy": heavy}), flush=True)
        parts.app.quit()
    QTimer.singleShot(1500, report)  # let the worker thread start and the loop settle

QTimer.singleShot(0, shown)
parts.app.exec()
"""


def one_run(data_dir: Path) -> dict[str, float]:
    env = dict(os.environ, HEYIM_DATA_DIR=str(data_dir), OMP_NUM_THREADS="1")
    # An installed app has compiled bytecode; without it every launch recompiles every module.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"the app did not report:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line)
    # The window was shown 1.5 s before the report.
    data["launch_to_window"] = data["wall_end"] - start - 1.5
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp))  # warm-up: writes bytecode caches and creates the data folder
        runs = [one_run(Path(tmp)) for _ in range(args.runs)]
    total = [r["launch_to_window"] for r in runs]
    inproc = [r["in_process"] for r in runs]
    rss = [r["rss"] / 2**20 for r in runs]
    print(f"runs: {len(runs)} (QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM', 'offscreen')})")
    print(f"process start -> window painted: median {statistics.median(total):.3f} s  "
          f"(min {min(total):.3f}, max {max(total):.3f})  target < 0.5 s")
    print(f"  of which imports + window build (in process): median {statistics.median(inproc):.3f} s")
    print(f"RSS before the first generation: median {statistics.median(rss):.0f} MB  "
          f"(max {max(rss):.0f})  target < 250 MB")
    print(f"heavy modules imported before the first generation: {sorted(set(sum((r['heavy'] for r in runs), []))) or 'none'}")


if __name__ == "__main__":
    main()
