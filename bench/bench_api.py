"""Local API latency on loopback: /health, /api/status, and txt2img on the tiny random model.

    .venv/bin/python bench/bench_api.py [--runs 20] [--steps 4] [--size 64]

Prints median and 95th percentile milliseconds per request, measured with a real HTTP client
(http.client, a new connection per request, as most API clients do) against ApiServer on
127.0.0.1 over the same JobQueue/EngineHost/WorkerThread path as `heyim-desktop serve`,
saving every image to a throwaway history store.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TOKEN = "bench-token"


def request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def _report(label: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    print(f"{label:<44} median {statistics.median(samples):8.1f} ms   p95 {p95:8.1f} ms   (n={len(samples)})")


def timed(label: str, runs: int, fn: Callable[[], int], engine_ms: list[float] | None = None) -> None:
    """Time ``fn``; with ``engine_ms`` (filled by a queue listener) also the time outside the engine."""
    samples, outside = [], []
    for _ in range(runs):
        if engine_ms is not None:
            engine_ms.clear()
        t0 = time.perf_counter()
        status = fn()
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
        if engine_ms:
            outside.append(samples[-1] - engine_ms[0])
    _report(label, samples)
    if outside:
        _report("  outside the engine (HTTP, queue, PNG, history)", outside)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
    from heyim_desktop.core.demo_model import build_demo_model
    from heyim_desktop.core.host import EngineHost, WorkerThread
    from heyim_desktop.core.jobs import JobQueue
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.store import HistoryStore

    quiet_third_party()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_demo_model(Path(tmp) / "tiny")
        store = HistoryStore.open(root=Path(tmp) / "history")
        queue = JobQueue()
        host = EngineHost(lambda ref: load_engine(ref, device=args.device), default_model=str(model))
        worker = WorkerThread(queue, host, lambda result, job: tuple(store.save_result(result, job)))
        worker.start()
        server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(model),
                           models=fixed_catalog(ModelChoice("tiny", str(model), str(model))))
        t0 = time.perf_counter()
        server.start()
        print(f"server start (import FastAPI/uvicorn, bind, listen): {(time.perf_counter() - t0) * 1000:.0f} ms")
        engine_ms: list[float] = []
        queue.add_listener(lambda job: job.result is not None and job.state.finished
                           and engine_ms.append(job.result.timings.get("total", 0.0) * 1000))
        body = {"prompt": "a red fox", "steps": args.steps, "width": args.size, "height": args.size, "seed": 1}
        t0 = time.perf_counter()
        request(server.port, "POST", "/sdapi/v1/txt2img", body)
        print(f"first txt2img (loads the model): {(time.perf_counter() - t0) * 1000:.0f} ms")
        timed("GET /health", args.runs * 5, lambda: request(server.port, "GET", "/health"))
        timed("GET /api/status", args.runs * 5, lambda: request(server.port, "GET", "/api/status"))
        timed("GET /sdapi/v1/progress (idle)", args.runs * 5, lambda: request(server.port, "GET", "/sdapi/v1/progress"))
        label = f"POST /sdapi/v1/txt2img {args.size}x{args.size} {args.steps} steps"
        timed(label, args.runs, lambda: request(server.port, "POST", "/sdapi/v1/txt2img", body), engine_ms)
        label = f"POST /api/generate {args.size}x{args.size} {args.steps} steps"
        timed(label, args.runs, lambda: request(server.port, "POST", "/api/generate", body), engine_ms)
        server.stop()
        worker.stop(timeout=30)
        store.close()


if __name__ == "__main__":
    main()
