"""``heyim-desktop serve``: headless, over a worker thread and the history store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from api_helpers import TOKEN, call
from heyim_desktop.api import ApiServer, ApiStartError
from heyim_desktop.api.serve import run_serve
from heyim_desktop.api.server import is_loopback
from heyim_desktop.cli import build_parser, main
from heyim_desktop.core.jobs import JobQueue


def _serve_in_thread(argv: list[str]) -> tuple[ApiServer, threading.Event, threading.Thread, list[int]]:
    args = build_parser().parse_args(["serve", *argv])
    ready = threading.Event()
    stop = threading.Event()
    holder: list[Any] = []
    codes: list[int] = []

    def run() -> None:
        codes.append(run_serve(args, on_ready=lambda s: (holder.append(s), ready.set()), stop=stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(120), "serve did not start"
    return holder[0], stop, thread, codes


def test_serve_demo_saves_api_images_in_the_history(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, stop, thread, codes = _serve_in_thread(["--demo", "--port", "0", "--token", TOKEN, "--device", "cpu"])
    try:
        assert server.host == "127.0.0.1"
        models = call(server.port, "GET", "/sdapi/v1/sd-models").json
        assert any(m["model_name"].startswith("HeyIm demo") for m in models)
        reply = call(server.port, "POST", "/sdapi/v1/txt2img",
                     body={"prompt": "a headless fox", "steps": 3, "width": 64, "height": 64, "seed": 5})
        assert reply.status == 200, reply.body
        ids = json.loads(reply.json["info"])["history_ids"]
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
    assert "HeyIm API on http://127.0.0.1:" in capsys.readouterr().err
    from heyim_desktop.store import HistoryStore

    store = HistoryStore.open()
    try:
        entry = store.get(ids[0])
        assert entry is not None and entry.prompt == "a headless fox" and entry.seed == 5 and entry.source == "api"
    finally:
        store.close()


def test_cmd_flags_say_how_serve_loads_models(data_dir: Path) -> None:
    """AUTOMATIC1111's /sdapi/v1/cmd-flags report serve's --device, --precision and --memory in its names."""
    server, stop, thread, _codes = _serve_in_thread(["--demo", "--port", "0", "--token", TOKEN, "--device", "cpu",
                                                     "--precision", "fp32", "--memory", "low"])
    try:
        flags = call(server.port, "GET", "/sdapi/v1/cmd-flags").json
        assert (flags["precision"], flags["no_half"], flags["lowvram"], flags["use_cpu"]) == ("full", True, True, ["all"])
        server.context.engine_settings = lambda: {"device": "auto", "precision": "bf16", "memory": "full"}
        flags = call(server.port, "GET", "/sdapi/v1/cmd-flags").json  # the window's Preferences, read per call
        assert (flags["precision"], flags["no_half"], flags["lowvram"], flags["use_cpu"]) == ("autocast", False, False, [])
    finally:
        stop.set()
        thread.join(60)


def test_serve_without_a_token_uses_the_private_per_install_token(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEYIM_API_TOKEN", raising=False)
    server, stop, thread, _ = _serve_in_thread(["--demo", "--port", "0"])
    try:
        token = (data_dir / "api-token").read_text().strip()
        ok = call(server.port, "GET", "/api/status", auth=False, headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200
        assert call(server.port, "GET", "/api/status").status == 401  # the test token is not this install's
    finally:
        stop.set()
        thread.join(60)


def test_serve_takes_the_token_from_the_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEYIM_API_TOKEN", "env-token")
    server, stop, thread, _ = _serve_in_thread(["--demo", "--port", "0"])
    try:
        assert call(server.port, "GET", "/api/status", auth=False, headers={"Authorization": "Bearer env-token"}).status == 200
    finally:
        stop.set()
        thread.join(60)


def test_serve_usage_errors_are_one_line(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["serve", "--demo", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    assert main(["serve", "--demo", "--model", "x"]) == 2  # one model source only


def test_a_taken_port_is_a_clear_error() -> None:
    first = ApiServer(JobQueue(), token=TOKEN, port=0)
    first.start()
    try:
        with pytest.raises(ApiStartError, match="in use"):
            ApiServer(JobQueue(), token=TOKEN, port=first.port).start()
    finally:
        first.stop()


def test_a_non_loopback_host_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.1 (TEST-NET) is on no machine: the warning comes first, then a clear bind error;
    # the test never opens a port beyond loopback.
    server = ApiServer(JobQueue(), token=TOKEN, host="192.0.2.1", port=0)
    with caplog.at_level("WARNING", logger="heyim_desktop.api"), pytest.raises(ApiStartError, match="192.0.2.1"):
        server.start()
    assert "other machines on the network" in caplog.text
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_the_default_bind_is_loopback() -> None:
    args = build_parser().parse_args(["serve", "--demo"])
    assert args.host is None and args.port == 5858  # run_serve then binds DEFAULT_HOST
    assert ApiServer(JobQueue(), token=TOKEN).host == "127.0.0.1"


@pytest.mark.slow
def test_the_real_command_serves_until_interrupted(data_dir: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HEYIM_API_TOKEN=TOKEN, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "heyim_desktop", "serve", "--demo", "--port", "0", "--device", "cpu"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        port = int(match.group(1))
        assert call(port, "GET", "/health", auth=False).body == b"OK"
        assert call(port, "GET", "/api/status").json["defaultModel"].startswith("HeyIm demo")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_server_can_be_switched_off_and_on_again() -> None:
    # As the Preferences switch does: one ApiServer, stopped and started over the same queue.
    server = ApiServer(JobQueue(), token=TOKEN, port=0)
    server.start()
    first = server.port
    assert call(first, "GET", "/health", auth=False).status == 200
    server.stop()
    assert not server.running
    server.start()
    try:
        assert server.running and call(server.port, "GET", "/api/status").status == 200
    finally:
        server.stop()
