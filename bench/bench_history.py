"""History with 10,000 entries: open time, search latency, and the memory the open grid adds.

Fills a store with N real entries (PNG files + rows, through ``HistoryStore.save_result``),
then measures in a fresh process: opening the store and showing the grid, searching as you
type (FTS5), and RSS before and after the grid is open and scrolled end to end with
thumbnails loading.

    .venv/bin/python bench/bench_history.py [--entries 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("fox cat whale castle forest river portrait city night snow golden hour oil painting watercolor "
         "dragon robot garden mountain ocean sunset neon street market lighthouse storm desert temple "
         "owl wolf horse train bridge library kitchen flower field cloud moon star rain fog").split()


def fill(root: Path, n: int) -> None:
    from PIL import Image

    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult
    from heyim_desktop.store import HistoryStore

    real_fsync = os.fsync
    os.fsync = lambda fd: None  # filling is setup, not measured: skip per-file fsync to finish in seconds
    rng = random.Random(1)
    store = HistoryStore.open(root)
    try:
        have = store.count()
        t0 = time.perf_counter()
        for i in range(have, n):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
            req = GenerationRequest(prompt, seed=i, width=64, height=64, steps=20)
            img = Image.new("RGB", (64, 64), (i % 255, (i * 7) % 255, (i * 13) % 255))
            store.save_result(GenerationResult(req, (GeneratedImage(img, i, 0),), "bench", "none", {}))
            if i and i % 2000 == 0:
                print(f"  filled {i} ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        store.close()
        os.fsync = real_fsync


CHILD = r"""
import json, os, statistics, sys, time
from pathlib import Path
import psutil
proc = psutil.Process()
from heyim_desktop.ui.qt import QApplication, QSize
app = QApplication(["bench"])
from heyim_desktop.store import HistoryStore
from heyim_desktop.ui.history_panel import HistoryPanel
root = Path(sys.argv[1])
app.processEvents()
rss_before = proc.memory_info().rss
t0 = time.perf_counter()
store = HistoryStore.open(root)
t_store = time.perf_counter() - t0
panel = HistoryPanel(store)
panel.resize(1000, 700)
panel.show()
app.processEvents()
t_open = time.perf_counter() - t0
rows = panel.model.rowCount()

def settle(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)

# Search as you type: each prefix is one query + a model reset (one letter waits for a second).
lat = []
for text in ("fo", "fox", "fox s", "fox sn", "fox snow", "golden hour", "neon street market", "zzz", ""):
    t = time.perf_counter()
    panel.model.set_filter(text, False)
    app.processEvents()
    lat.append((text, (time.perf_counter() - t) * 1000, panel.model.rowCount()))
raw = []
for text in ("fox", "golden hour", "castle night"):
    t = time.perf_counter(); store.ids(text); raw.append((time.perf_counter() - t) * 1000)

# Scroll end to end, letting visible thumbnails load.
bar = panel.view.verticalScrollBar()
for frac in [i / 20 for i in range(21)]:
    bar.setValue(int(bar.maximum() * frac))
    settle(0.15)
settle(1.0)
rss_after = proc.memory_info().rss
print(json.dumps({"rows": rows, "store_open_ms": t_store * 1000, "open_ms": t_open * 1000,
                  "search": lat, "raw_search_ms": raw, "rss_before": rss_before, "rss_after": rss_after,
                  "thumbs_cached": len(panel.model._pixmaps)}))
panel.close_model(); store.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--keep", help="reuse/keep the filled store in this folder")
    args = parser.parse_args()
    tmp = None
    if args.keep:
        root = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "history"
    print(f"filling {root} to {args.entries} entries...", flush=True)
    t0 = time.perf_counter()
    fill(root, args.entries)
    print(f"  done in {time.perf_counter() - t0:.0f} s")
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(out.stdout + out.stderr)
    r = json.loads(line)
    print(f"entries: {r['rows']}")
    print(f"open: store {r['store_open_ms']:.0f} ms, store + grid shown {r['open_ms']:.0f} ms   target < 300 ms")
    lat = [ms for _t, ms, _n in r["search"]]
    print(f"search as you type (query + grid reset): median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms"
          f"   target < 20 ms")
    for text, ms, n in r["search"]:
        print(f"    {text!r:<22} {ms:6.1f} ms  {n:>6} hits")
    print(f"  store.ids() alone: {', '.join(f'{ms:.1f}' for ms in r['raw_search_ms'])} ms")
    added = (r["rss_after"] - r["rss_before"]) / 2**20
    print(f"memory the open grid adds (after scrolling end to end, {r['thumbs_cached']} thumbnails cached): "
          f"{added:.0f} MB   target < 100 MB")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
