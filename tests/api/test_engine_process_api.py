"""``heyim-desktop serve`` over the engine process: a killed engine fails one request, the server stays up."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from api_helpers import TOKEN, call, decode_png, png_b64
from heyim_desktop.api.serve import run_serve
from heyim_desktop.cli import build_parser
from heyim_desktop.core.jobs import Job, JobState

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals by PID are POSIX")

KILLED = "The engine stopped unexpectedly (killed by signal 9, likely out of memory). It restarts for the next job."


@pytest.mark.slow
def test_killing_the_engine_mid_request_fails_that_request_and_the_next_one_works(data_dir: Path) -> None:
    """Generations and upscales (extra-single-image) alike."""
    from heyim_desktop.core.process.remote import RemoteEngine
    from tiny_upscaler import make_esrgan

    folder = data_dir / "models" / "upscalers"
    folder.mkdir(parents=True)
    esrgan = make_esrgan(folder, 2)[0]
    (folder / f"{esrgan.stem}.pth").unlink()
    args = build_parser().parse_args(["serve", "--demo", "--port", "0", "--token", TOKEN, "--device", "cpu"])
    ready, stop = threading.Event(), threading.Event()
    holder: list[Any] = []
    thread = threading.Thread(target=run_serve, args=(args,), daemon=True,
                              kwargs={"on_ready": lambda s: (holder.append(s), ready.set()), "stop": stop})
    thread.start()
    assert ready.wait(120), "serve did not start"
    server = holder[0]
    host = server.context.host
    pids: list[int] = []

    def kill_once(job: Job) -> None:
        if job.state is JobState.RUNNING and job.progress is not None and not pids:
            engine = host.engine if host.engine is not None and not host.engine.stopped else host.upscaler
            assert engine is not None and engine.pid != os.getpid()
            pids.append(engine.pid)
            os.kill(engine.pid, signal.SIGKILL)

    server.context.queue.add_listener(kill_once)
    try:
        body = {"prompt": "a doomed fox", "steps": 150, "width": 64, "height": 64, "seed": 5}
        failed = call(server.port, "POST", "/sdapi/v1/txt2img", body=body)
        assert pids and failed.status >= 500
        assert KILLED in failed.body.decode()
        assert call(server.port, "GET", "/api/status").status == 200  # the server is still up
        ok = call(server.port, "POST", "/sdapi/v1/txt2img", body={**body, "steps": 2})
        assert ok.status == 200, ok.body
        assert isinstance(host.engine, RemoteEngine) and host.engine.pid != pids[0]

        # An upscale runs in the engine process too: killed at its first tile, it fails alone. The image
        # is wider than the largest tile (2048), so a second tile is still to run when the kill lands
        # (a one-tile upscale could send its result first).
        pids.clear()
        extra = {"image": png_b64((2100, 64)), "upscaling_resize": 2, "upscaler_1": esrgan.stem}
        failed = call(server.port, "POST", "/sdapi/v1/extra-single-image", body=extra)
        assert pids and failed.status >= 500 and KILLED in failed.body.decode()
        assert call(server.port, "GET", "/api/status").status == 200
        upscaled = call(server.port, "POST", "/sdapi/v1/extra-single-image", body=extra)
        assert upscaled.status == 200, upscaled.body
        assert decode_png(upscaled.json["image"]).size == (4200, 128)
    finally:
        stop.set()
        thread.join(60)
