"""The cost of the engine process boundary, against the same engine in this process.

    python bench/bench_engine_process.py                 # tiny model, 64x64, 1 step, 30 jobs
    python bench/bench_engine_process.py --jobs 50 --size 128 --transfer 1024

1. Per-job overhead: the tiny demo model in-process (load_engine) and in an engine child
   (ProcessLoader), jobs interleaved, median wall time per job; the difference is what the
   boundary costs (the request as codec data, progress messages, the result's pixels).
   A token-count round trip is the bare channel latency.
2. Transfer of one result image (default 1024x1024 RGB) from a child to a Pillow image here:
   raw pixels through a shared-memory block the parent owns and keeps between jobs (what HeyIm
   uses), the same with a fresh block per result, raw pixels inline over the pipe, and PNG bytes over the pipe (compress level 1, and 6 as history
   files use). The image is smooth gradients plus mild noise, like a generated picture.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))


def _picture(size: int) -> "object":
    import numpy as np

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(0)
    rgb = np.stack([np.sin(6 * x + 2 * y), np.cos(4 * y - x), np.sin(3 * (x * y) * 7)], axis=-1)
    noisy = (rgb * 0.5 + 0.5) * 230 + rng.normal(0, 6, rgb.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def echo_child(size: int) -> None:
    """The transfer bench's child: answers each request with one image by the asked route."""
    from PIL import Image

    from heyim_desktop.core.process import shared
    from heyim_desktop.core.process.protocol import MessageWriter, read_message

    out = MessageWriter(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    arr = _picture(size)
    image = Image.fromarray(arr)
    out.send({"ev": "hello"})
    block = None
    while True:
        msg = read_message(sys.stdin.buffer)
        if msg is None:
            return
        how = msg.data["how"]
        if how == "shm":
            if block is None or block.name != msg.data["shm"]:
                block = shared.attach(msg.data["shm"])
            block.buf[:arr.nbytes] = arr.reshape(-1).data
            out.send({"ev": "result"})
        elif how == "raw":
            out.send({"ev": "result"}, (arr.tobytes(),))
        else:
            buf = io.BytesIO()
            image.save(buf, format="PNG", compress_level=int(how[3:]))
            out.send({"ev": "result"}, (buf.getvalue(),))


def bench_transfer(size: int, repeats: int) -> None:
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.process import shared
    from heyim_desktop.core.process.protocol import MessageWriter, read_message

    proc = subprocess.Popen([sys.executable, __file__, "--echo-child", str(size)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert proc.stdin is not None and proc.stdout is not None
    send = MessageWriter(proc.stdin)  # type: ignore[arg-type]
    assert read_message(proc.stdout) is not None  # type: ignore[arg-type]
    n = size * size * 3
    print(f"\ntransfer of one {size}x{size} RGB result, child -> Pillow image here ({repeats} runs, median):")
    kept = shared.create(n)
    for how in ("shm-kept", "shm-new", "raw", "png1", "png6"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            block = kept if how == "shm-kept" else shared.create(n) if how == "shm-new" else None
            send.send({"op": "x", "how": "shm" if block else how, "shm": block.name if block else None})
            msg = read_message(proc.stdout)  # type: ignore[arg-type]
            assert msg is not None
            if block is not None:
                assert block.buf is not None
                pixels = bytes(block.buf[:n])
                if block is not kept:
                    shared.release(block)
                img = Image.fromarray(np.frombuffer(pixels, np.uint8).reshape(size, size, 3))
            elif how == "raw":
                img = Image.fromarray(np.frombuffer(msg.blobs[0], np.uint8).reshape(size, size, 3))
            else:
                img = Image.open(io.BytesIO(msg.blobs[0]))
                img.load()
            times.append((time.perf_counter() - t0) * 1000)
            assert img.size == (size, size)
        extra = f"  ({len(msg.blobs[0]) / 2**20:.1f} MB)" if msg.blobs else ""
        label = {"shm-kept": "shared memory, block kept (used)", "shm-new": "shared memory, new block each",
                 "raw": "raw over the pipe", "png1": "PNG level 1 over the pipe",
                 "png6": "PNG level 6 over the pipe"}[how]
        print(f"  {label:<34} {statistics.median(times):8.2f} ms   min {min(times):7.2f} ms{extra}")
    shared.release(kept)
    proc.stdin.close()
    proc.wait(30)


def bench_jobs(jobs: int, size: int, steps: int) -> None:
    import torch

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.process.remote import ProcessLoader
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.thirdparty import quiet_third_party

    torch.set_num_threads(1)
    quiet_third_party()
    t0 = time.perf_counter()
    local = load_engine("demo", device="cpu")
    local_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    remote = ProcessLoader(device="cpu")("demo")
    remote_load = time.perf_counter() - t0
    print(f"tiny demo model, {size}x{size}, {steps} step(s), {jobs} jobs each, interleaved")
    print(f"  load: in-process {local_load:.2f} s, engine process {remote_load:.2f} s (start + torch import + load)")
    try:
        request = GenerationRequest("a red fox in the snow", steps=steps, width=size, height=size, seed=1)
        for engine in (local, remote):  # warm up both
            engine.generate(request)
        t_local: list[float] = []
        t_remote: list[float] = []
        # Wall time minus the engine's own run_loop time: what each job costs around the
        # denoising (Pillow conversion; and for the child the boundary). Robust against the
        # compute noise of a busy machine, which the raw medians below are not.
        o_local: list[float] = []
        o_remote: list[float] = []
        for i in range(jobs):
            r = request.replace(seed=i)
            for engine, times, around in ((local, t_local, o_local), (remote, t_remote, o_remote)):
                t0 = time.perf_counter()
                result = engine.generate(r, progress=lambda p: None)
                wall = (time.perf_counter() - t0) * 1000
                times.append(wall)
                around.append(wall - result.timings["total"] * 1000)
        rtt = []
        for _ in range(50):
            t0 = time.perf_counter()
            assert remote.count_tokens("a red fox", timeout=5) is not None
            rtt.append((time.perf_counter() - t0) * 1000)
        ml, mr = statistics.median(t_local), statistics.median(t_remote)
        print(f"  in-process      median {ml:8.2f} ms   min {min(t_local):7.2f} ms")
        print(f"  engine process  median {mr:8.2f} ms   min {min(t_remote):7.2f} ms")
        ol, orr = statistics.median(o_local), statistics.median(o_remote)
        print(f"  around the denoising loop: in-process {ol:.2f} ms, engine process {orr:.2f} ms (medians)")
        print(f"  overhead of the boundary per job: {orr - ol:+.2f} ms (target < 5 ms plus the image transfer); "
              f"raw medians differ by {mr - ml:+.2f} ms")
        print(f"  token-count round trip (bare channel latency): median {statistics.median(rtt):.2f} ms")
    finally:
        remote.close()
        local.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--transfer", type=int, default=1024, help="side of the transferred image")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--echo-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_child:
        echo_child(args.echo_child)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = tempfile.TemporaryDirectory()
    os.environ.setdefault("HEYIM_DATA_DIR", tmp.name)
    bench_jobs(args.jobs, args.size, args.steps)
    bench_transfer(args.transfer, args.repeats)
    print(f"\n(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
