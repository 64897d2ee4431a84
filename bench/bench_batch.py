"""Batch throughput through the Redis queue (1 and 2 workers) against one local process.

    python bench/bench_batch.py                          # 40 jobs, tiny model, 128x128, 8 steps
    python bench/bench_batch.py --jobs 100 --steps 3 --size 64    # mostly queue overhead
    python bench/bench_batch.py --queue redis://farm:6379/5 --model ~/models/sd15 --size 512 --steps 20

Starts its own redis-server on 127.0.0.1 unless --queue is given (that database is flushed!).
Local: one process loads the model once and renders the jobs back to back. Queue: the same
jobs submitted as one batch to N worker processes already running with the model loaded;
the time runs from submit to the last job's finish stamp in Redis, so worker start-up (also
printed) is not counted. Overhead per job = (queue time with 1 worker - local time) / jobs:
submit, Redis round trips, PNG encoding of the result, and the idle poll between jobs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"Ready to accept connections" in line:
            break
    return proc, f"redis://127.0.0.1:{port}/0"


def _requests(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from heyim_desktop.core.request import GenerationRequest

    return [GenerationRequest(prompt=f"bench prompt {i}", steps=args.steps, width=args.size, height=args.size,
                              seed=1000 + i, scheduler="Euler") for i in range(args.jobs)]


def _local(args: argparse.Namespace, model: str) -> tuple[float, float, float]:
    """(load s, wall s, engine s) for all jobs in this process, the PNG encoding included."""
    import io

    import torch

    from heyim_desktop.core.loading import load_engine

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    engine = load_engine(model, device="cpu")
    load_s = time.perf_counter() - t0
    requests = _requests(args)
    engine.generate(requests[0].replace(seed=1))  # warm-up, as a worker's first job would be
    t0 = time.perf_counter()
    engine_s = 0.0
    for request in requests:
        result = engine.generate(request)
        engine_s += result.timings["total"]
        result.images[0].image.save(io.BytesIO(), format="PNG", compress_level=4)  # workers store PNGs too
    wall_s = time.perf_counter() - t0
    engine.close()
    return load_s, wall_s, engine_s


def _queue(args: argparse.Namespace, url: str, model: str, workers: int, data_dir: Path) -> tuple[float, float, float]:
    """(start-up s until all workers idle, s from submit to the last finish, engine s summed)."""
    from heyim_desktop.scale.client import submit_requests
    from heyim_desktop.scale.connection import open_redis
    from heyim_desktop.scale.records import Records

    client = open_redis(url)
    client.flushdb()
    records = Records(client)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS=str(args.threads), HEYIM_DATA_DIR=str(data_dir))
    model_args = ["--demo"] if model == "demo" else ["--model", model]
    procs = []
    t0 = time.perf_counter()
    for n in range(workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "heyim_desktop.cli", "worker", "--queue", url, "--id", f"bench{n}",
             "--device", "cpu", *model_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        while len([w for w in records.workers() if w.state == "idle"]) < workers:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited during start-up; run it by hand to see why")
            time.sleep(0.1)
        startup_s = time.perf_counter() - t0
        # Same warm-up as the local run: one job per worker before the clock starts.
        warm = submit_requests(url, [r.replace(seed=1) for r in _requests(args)[:workers]])
        while not records.batch(warm.batch_id).finished:  # type: ignore[union-attr]
            time.sleep(0.05)
        start = time.time()
        batch = submit_requests(url, _requests(args))
        while True:
            status = records.batch(batch.batch_id)
            assert status is not None
            if status.finished:
                break
            time.sleep(0.5)  # the finish stamps give the time; polling gently leaves the CPUs to the workers
        if status.count("done") != args.jobs:
            raise SystemExit(f"only {status.count('done')} of {args.jobs} jobs finished: {status.jobs[0].error}")
        last = max(float(client.hget(f"heyim:job:{j}", "finished") or 0) for j in batch.job_ids)
        engine_s = sum(r.timings["total"] for r in (records.result(j) for j in batch.job_ids) if r)
        return startup_s, last - start, engine_s
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--model", default="", help="a diffusers model folder (default: the tiny demo model)")
    parser.add_argument("--queue", default="", help="use this Redis (its database is flushed) instead of a private one")
    parser.add_argument("--workers", default="1,2", help="worker counts to try (default 1,2)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    with tempfile.TemporaryDirectory(prefix="heyim-bench-batch-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        os.environ["HEYIM_DATA_DIR"] = str(data_dir)
        model = args.model or "demo"
        if model == "demo":
            from heyim_desktop.core import paths

            paths.ensure_demo_model()
        redis_proc = None
        url = args.queue
        if not url:
            redis_proc, url = _start_redis(work)
        try:
            load_s, local_s, local_engine_s = _local(args, model)
            rows = [("local, 1 process", 1, None, local_s, local_engine_s)]
            for n in (int(x) for x in args.workers.split(",")):
                startup_s, queue_s, engine_s = _queue(args, url, model, n, data_dir)
                rows.append((f"queue, {n} worker(s)", n, startup_s, queue_s, engine_s))
            # Again at the end: on a shared machine the load drifts; the two local runs bracket it.
            _, local2_s, local2_engine_s = _local(args, model)
            rows.append(("local again", 1, None, local2_s, local2_engine_s))
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)

    cpus = os.cpu_count()
    print(f"{args.jobs} jobs, {args.size}x{args.size}, {args.steps} steps, model {model}, "
          f"{args.threads} torch thread(s) per process, {cpus} CPU(s); model load {load_s:.2f}s")
    print(f"{'':20} {'start-up s':>10} {'total s':>8} {'jobs/min':>9} {'s/job':>7} {'engine s/job':>12} "
          f"{'other ms/job':>12}")
    for name, procs, startup, total, engine in rows:
        up = f"{startup:.1f}" if startup is not None else "-"
        # Per job, what is not the engine's own time: queue round trips, PNG, idle polls.
        other = (total * procs - engine) / args.jobs * 1000
        print(f"{name:20} {up:>10} {total:>8.2f} {args.jobs * 60 / total:>9.1f} {total / args.jobs:>7.3f} "
              f"{engine / args.jobs:>12.3f} {other:>12.0f}")
    one = next(total for name, _, _, total, _ in rows if name.startswith("queue, 1 "))
    local_mean = (local_s + local2_s) / 2
    print(f"queue (1 worker) vs local wall time per job: {(one - local_mean) / args.jobs * 1000:+.0f} ms; "
          f"'other ms/job' separates queue overhead from CPU contention (engine time is measured in each process)")


if __name__ == "__main__":
    main()
