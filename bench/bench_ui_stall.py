"""Longest main-thread stall while the worker loads a model and generates.

A heartbeat QTimer ticks every 5 ms on the main thread; the longest gap between two ticks
beyond the interval is how long the window could not repaint or react. Phases: idle,
model load (the engine's start and torch import included), and generation with live previews.
Each mode runs in a fresh interpreter: "child" is the app as shipped (the engine in its own
process), "in-process" the peer, with the engine on the worker thread of the GUI process.

    .venv/bin/python bench/bench_ui_stall.py [--mode both|child|in-process] [--model demo|FOLDER]
                                             [--size 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # this checkout's code, not an installed copy

TICK_MS = 5


class Heartbeat:
    def __init__(self) -> None:
        from heyim_desktop.ui.qt import Qt, QTimer

        self.gaps: list[float] = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last) * 1000 - TICK_MS)
        self.last = now

    def take(self) -> list[float]:
        gaps, self.gaps = self.gaps, []
        self.last = time.perf_counter()
        return gaps


def wait_for(app, predicate, timeout: float = 600.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.001)  # a bench, not a test: yield the core between event loop turns


def report(name: str, gaps: list[float]) -> None:
    if not gaps:
        print(f"{name:<28} no ticks")
        return
    gaps = sorted(gaps)
    p99 = gaps[int(len(gaps) * 0.99) - 1] if len(gaps) > 1 else gaps[0]
    over = sum(1 for g in gaps if g > 50)
    print(f"{name:<28} ticks {len(gaps):>6}   max stall {max(gaps):7.1f} ms   p99 {p99:6.1f} ms   "
          f"median {statistics.median(gaps):5.1f} ms   >50 ms: {over}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="model reference (default: the tiny demo model)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--mode", choices=("both", "child", "in-process"), default="both")
    args = parser.parse_args()
    if args.mode == "both":
        import subprocess

        for mode in ("child", "in-process"):
            print(f"== {mode} ==", flush=True)
            argv = [a for a in sys.argv[1:] if not a.startswith("--mode")]
            subprocess.run([sys.executable, __file__, *argv, "--mode", mode], check=True)
        return
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = tempfile.TemporaryDirectory()
    os.environ["HEYIM_DATA_DIR"] = tmp.name
    if args.model == "demo":
        # Build the demo model in a child process so this one has not imported torch yet.
        import subprocess

        subprocess.run([sys.executable, "-m", "heyim_desktop", "demo-model", str(Path(tmp.name) / "cache" / "demo-model")],
                       check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src")))

    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.ui.app import build_app

    loader = None
    if args.mode == "in-process":
        from heyim_desktop.core.loading import load_engine

        def loader(ref: str):  # type: ignore[no-untyped-def]
            return load_engine(ref, device="cpu")

    parts = build_app(["bench"], loader=loader)
    app, worker = parts.app, parts.worker
    beat = Heartbeat()
    wait_for(app, worker.isRunning, 30)
    t_end = time.monotonic() + 1.0
    wait_for(app, lambda: time.monotonic() > t_end)
    report("idle (1 s)", beat.take())

    ready: list[object] = []
    failed: list[str] = []
    worker.model_ready.connect(ready.append)
    worker.model_failed.connect(lambda ref, msg: failed.append(msg))
    t0 = time.perf_counter()
    worker.request_model(args.model)
    wait_for(app, lambda: bool(ready or failed))
    if failed:
        raise SystemExit(failed[0])
    load_s = time.perf_counter() - t0
    report(f"model load ({load_s:.1f} s)", beat.take())
    print(f"  torch in the GUI process after the load: {'yes' if 'torch' in sys.modules else 'no'}")

    done: list[object] = []
    previews: list[object] = []
    parts.window.job_shown.connect(done.append)
    worker.preview.connect(lambda *_: previews.append(1))
    t0 = time.perf_counter()
    request = GenerationRequest("a red fox in the snow", steps=args.steps, width=args.size, height=args.size,
                                count=args.count, model=args.model, seed=1)
    parts.window.submit(request)
    wait_for(app, lambda: bool(done))
    gen_s = time.perf_counter() - t0
    report(f"generation ({gen_s:.1f} s)", beat.take())
    print(f"  {args.count} image(s) {args.size}x{args.size}, {args.steps} steps, {len(previews)} previews shown; "
          f"job {done[0].state.value}")  # type: ignore[attr-defined]
    try:
        import psutil

        print(f"  GUI process RSS {psutil.Process().memory_info().rss / 2**20:.0f} MB; torch imported here: "
              f"{'yes' if 'torch' in sys.modules else 'no'}")
    except ImportError:
        pass
    parts.shutdown()
    print(f"target: longest stall < 50 ms (2-core machine load average now "
          f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
