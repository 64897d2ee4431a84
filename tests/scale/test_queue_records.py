"""The Redis side without workers: URLs and passwords, idempotent results, job states."""

from __future__ import annotations

from pathlib import Path

import pytest

from heyim_desktop.cli import main
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult
from heyim_desktop.scale.connection import open_redis, redact
from heyim_desktop.scale.errors import QueueUnavailable
from heyim_desktop.scale.records import NewJob, Records
from queue_helpers import RedisServer, launch_redis, stop_redis

DB = 5


def test_urls_are_checked_and_passwords_never_shown() -> None:
    assert redact("redis://:hunter2@farm:6379/0") == "redis://:***@farm:6379/0"
    assert redact("rediss://render:hunter2@farm:6380/1") == "rediss://render:***@farm:6380/1"
    assert redact("redis://farm/0?db=1&password=hunter2") == "redis://farm/0?db=1&password=***"
    with pytest.raises(QueueUnavailable, match="must be a redis://"):
        open_redis("http://farm:6379")
    with pytest.raises(QueueUnavailable, match="must be a redis://"):
        open_redis("")


def test_tls_urls_use_tls() -> None:
    import redis

    client = redis.Redis.from_url("rediss://:pw@farm.example:6380/0")
    assert client.connection_pool.connection_class is redis.SSLConnection


def test_an_unreachable_queue_is_one_line_with_exit_code_4(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["batch", "status", "--queue", f"redis://:secret@127.0.0.1:{port}/0"]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"heyim-desktop: error: Cannot reach the Redis queue at redis://:***@127.0.0.1:{port}/0")
    assert err.count("\n") == 1 and "secret" not in err


def test_a_password_protected_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = launch_redis(tmp_path, "--requirepass", "s3cret")
    try:
        assert open_redis(f"redis://:s3cret@127.0.0.1:{server.port}/0").ping()
        with pytest.raises(QueueUnavailable) as info:
            open_redis(f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert "password" in str(info.value) and "wrong" not in str(info.value)
        with pytest.raises(QueueUnavailable, match="refused"):
            open_redis(f"redis://127.0.0.1:{server.port}/0")
    finally:
        stop_redis(server)


def test_a_tls_queue_with_a_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = launch_redis(tmp_path, "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                          "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", "s3cret", tls=True)
    try:
        url = f"rediss://:s3cret@127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
        batch = tmp_path / "b.csv"
        batch.write_text("prompt,seed\na fox,1-2\n", encoding="utf-8")
        assert main(["batch", "submit", "--queue", url, str(batch)]) == 0
        batch_id = capsys.readouterr().out.strip()
        assert main(["batch", "status", "--queue", url, batch_id]) == 0
        assert "2 job(s): 2 queued" in capsys.readouterr().out
        # An unverifiable certificate is refused, in one line, without the password.
        assert main(["batch", "status", "--queue", f"rediss://:s3cret@127.0.0.1:{server.port}/0"]) == 4
        err = capsys.readouterr().err
        assert "certificate verify failed" in err and "s3cret" not in err and err.count("\n") == 1
    finally:
        stop_redis(server)


def _result(request: GenerationRequest, colour: tuple[int, int, int]) -> GenerationResult:
    from PIL import Image

    image = Image.new("RGB", (64, 64), colour)
    return GenerationResult(request=request, images=(GeneratedImage(image, request.seed or 0, 0),),
                            model_name="tiny", engine="torch-cpu", timings={"total": 0.1})


def test_the_first_stored_result_wins_and_finished_jobs_are_not_begun_again(redis_server: RedisServer) -> None:
    from heyim_desktop.core.codec import request_to_data

    redis_server.client(DB).flushdb()
    records = Records(redis_server.client(DB))
    request = GenerationRequest(prompt="x", seed=3, width=64, height=64, steps=2)
    from heyim_desktop.scale.client import new_batch_id

    batch_id = new_batch_id()
    (job_id,) = records.create_batch(batch_id, [NewJob(request_to_data(request), line=2)], name="t", source="test")
    assert records.begin(job_id, "a") == (request_to_data(request), 1)
    assert records.begin(job_id, "b") is not None  # redelivered after "a" went silent: attempt 2
    assert records.store_result(job_id, "b", _result(request, (0, 0, 255))) is True
    assert records.store_result(job_id, "a", _result(request, (255, 0, 0))) is False  # the late one is dropped
    stored = records.result(job_id)
    assert stored is not None and stored.worker == "b" and len(stored.images) == 1
    assert records.begin(job_id, "c") is None  # done: a third delivery does nothing
    records.fail(job_id, "too late")  # a failure after success does not undo it
    status = records.batch(batch_id)
    assert status is not None and [(j.state, j.attempts, j.worker, j.line) for j in status.jobs] == [("done", 2, "b", 2)]
    result = stored.to_result(records.request_data(job_id) or {})
    assert result.images[0].image.getpixel((0, 0)) == (0, 0, 255) and result.request.seed == 3


def test_status_of_an_unknown_batch(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "status", "--queue", redis_server.url(DB), "no-such-batch"]) == 2
    assert "No batch 'no-such-batch'" in capsys.readouterr().err


def test_the_queue_package_imports_no_qt_and_nothing_heavy_at_import() -> None:
    import os
    import subprocess
    import sys

    import heyim_desktop.scale as scale

    folder = Path(scale.__file__).parent  # no Qt: the import contracts (tests/test_boundaries.py)
    code = ("import sys, heyim_desktop.cli, heyim_desktop.scale.cli, heyim_desktop.scale.client, "
            "heyim_desktop.scale.worker, heyim_desktop.scale.batchfile\n"
            "print(','.join(m for m in ('torch', 'diffusers', 'redis', 'dramatiq', 'PySide6') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(folder.parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
