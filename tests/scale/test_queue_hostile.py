"""Whoever can write to Redis must not be able to write files, crash a command or wedge a job.

A real redis-server, no workers: hostile job ids, results and records are written straight
into Redis, then collected and looked at through the CLI and the client.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from heyim_desktop.cli import main
from heyim_desktop.core.codec import request_to_data
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult
from heyim_desktop.scale import broker as qb
from heyim_desktop.scale.client import collect, new_batch_id
from heyim_desktop.scale.errors import MalformedRecord
from heyim_desktop.scale.records import PREFIX, NewJob, Records, is_job_id
from queue_helpers import RedisServer

DB = 7
REQUEST = GenerationRequest(prompt="a fox", seed=3, width=64, height=64, steps=2)


@pytest.fixture()
def records(redis_server: RedisServer) -> Records:
    client = redis_server.client(DB)
    client.flushdb()
    return Records(client)


def _result(request: GenerationRequest = REQUEST) -> GenerationResult:
    from PIL import Image

    image = Image.new("RGB", (request.width, request.height), (0, 128, 255))
    return GenerationResult(request=request, images=(GeneratedImage(image, request.seed or 0, 0),),
                            model_name="tiny", engine="torch-cpu", timings={"total": 0.1})


def _batch(records: Records, count: int = 1, age_s: float = 0.0) -> tuple[str, list[str]]:
    batch_id = new_batch_id()
    if age_s:
        batch_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() - age_s)) + batch_id[15:]
    ids = records.create_batch(batch_id, [NewJob(request_to_data(REQUEST), line=i + 2) for i in range(count)],
                               name="t", source="test")
    return batch_id, ids


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _store_raw_result(records: Records, job_id: str, png: bytes | None = None, raw: str | None = None) -> None:
    import base64

    if raw is None:
        raw = json.dumps({"job": job_id, "worker": "w", "model_name": "m", "engine": "e", "timings": {}, "warnings": [],
                          "images": [{"index": 0, "seed": 3, "png": base64.b64encode(png or b"").decode()}]})
    records.r.set(f"{PREFIX}result:{job_id}", raw)
    records.r.hset(f"{PREFIX}job:{job_id}", mapping={"state": "done"})


def test_job_ids_must_have_heyims_form() -> None:
    batch_id = new_batch_id()
    assert is_job_id(f"{batch_id}-00001") and is_job_id(f"{batch_id}-00001", batch_id)
    for bad in ("../../../x", "/tmp/x", f"{batch_id}-00001/../../x", f"{batch_id}-1", "", f"{batch_id}-00001\n",
                f"../{batch_id}-00001", f"{batch_id}-00001.png"):
        assert not is_job_id(bad), bad
    assert not is_job_id("20990101-000000-abcdef-00001", batch_id)  # another batch's job


def test_collect_never_writes_outside_out(records: Records, tmp_path: Path, redis_server: RedisServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    batch_id, (good,) = _batch(records)
    assert records.store_result(good, "w", _result())
    outside = tmp_path / "victim"
    hostile = ["../../victim/x", str(outside / "abs"), f"{batch_id}-00002/../../../victim/y", "..", "",
               "20990101-000000-abcdef-00001"]
    for job_id in hostile:  # what anyone who can write to Redis could add to the batch
        records.r.rpush(f"{PREFIX}batch:{batch_id}:jobs", job_id)
        records.r.hset(f"{PREFIX}job:{job_id}", mapping={"request": json.dumps(request_to_data(REQUEST)), "state": "done"})
        records.r.set(f"{PREFIX}result:{job_id}", records.r.get(f"{PREFIX}result:{good}") or b"")
    out = tmp_path / "deep" / "er" / "out"
    got = collect(redis_server.url(DB), batch_id, out)
    assert [p.name for p in got.saved] == [f"{good}.png"]
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} == {
        f"deep/er/out/{good}.png"}
    assert len(got.failed) == len(hostile) and all("not a job id HeyIm makes" in r for _, r in got.failed)
    capsys.readouterr()
    assert main(["batch", "collect", "--queue", redis_server.url(DB), batch_id, "--out", str(out)]) == 4
    assert "not a job id HeyIm makes" in capsys.readouterr().err


@pytest.mark.parametrize("case, expected", [
    ("bomb", "(a decompression bomb); not decoded"),
    ("big", "claims 8000x8000 pixels, not the requested 64x64"),
    ("wrong size", "claims 65x64 pixels, not the requested 64x64"),
    ("truncated", "not a readable PNG"),
    ("not png", "not a readable PNG"),
    ("not json", "the stored result is malformed"),
    ("deep json", "the stored result is malformed"),
    ("not base64", "the stored result is malformed"),
])
def test_a_hostile_result_is_refused_before_decoding_and_marked_failed(
    records: Records, tmp_path: Path, redis_server: RedisServer, case: str, expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from PIL import Image

    batch_id, (bad, good) = _batch(records, 2)
    assert records.store_result(good, "w", _result())
    if case == "bomb":
        _store_raw_result(records, bad, _png_claiming(200_000, 200_000))
    elif case == "big":
        _store_raw_result(records, bad, _png_claiming(8000, 8000))
    elif case == "wrong size":
        buf = io.BytesIO()
        Image.new("RGB", (65, 64)).save(buf, format="PNG")
        _store_raw_result(records, bad, buf.getvalue())
    elif case == "truncated":
        buf = io.BytesIO()
        Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
        _store_raw_result(records, bad, buf.getvalue()[:300])
    elif case == "not png":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buf, format="BMP")
        _store_raw_result(records, bad, buf.getvalue())
    elif case == "not json":
        _store_raw_result(records, bad, raw="\x00\x01 not json")
    elif case == "deep json":
        _store_raw_result(records, bad, raw="[" * 100_000 + "]" * 100_000)
    else:
        _store_raw_result(records, bad, raw=json.dumps({"job": bad, "worker": "w", "model_name": "m", "engine": "e",
                                                         "timings": {}, "warnings": [],
                                                         "images": [{"index": 0, "seed": 1, "png": "!!not base64!!"}]}))
    out = tmp_path / "out"
    assert main(["batch", "collect", "--queue", redis_server.url(DB), batch_id, "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == [f"{good}.png"]  # the good one is still written
    status = records.batch(batch_id)
    assert status is not None
    job = next(j for j in status.jobs if j.id == bad)
    assert job.state == "failed" and expected in job.error
    assert records.r.exists(f"{PREFIX}result:{bad}") == 0  # the bad result is not read again


def test_status_of_malformed_records_is_clear(records: Records, redis_server: RedisServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    batch_id, ids = _batch(records, 4)
    records.r.hset(f"{PREFIX}job:{ids[0]}", mapping={"attempts": "lots"})
    records.r.hset(f"{PREFIX}job:{ids[1]}", mapping={"index": "9" * 5000})
    records.r.hset(f"{PREFIX}job:{ids[2]}", mapping={"state": "pwned"})
    records.r.hset(f"{PREFIX}batch:{batch_id}", mapping={"created": "NaN", "total": "x"})
    records.r.rpush(f"{PREFIX}batch:{batch_id}:jobs", "../etc/passwd")
    records.r.hset(f"{PREFIX}worker:evil", mapping={"jobs_done": "1e999", "last_seen": "inf"})
    records.r.sadd(f"{PREFIX}workers", "evil")
    assert main(["batch", "status", "--queue", redis_server.url(DB), batch_id]) == 0
    out = capsys.readouterr().out
    assert "5 job(s): 4 failed, 1 queued" in out
    assert "attempts is not a number ('lots')" in out and "index is not a number" in out
    assert "unknown state 'pwned'" in out and "its id is not one HeyIm makes" in out
    assert main(["batch", "status", "--queue", redis_server.url(DB)]) == 0  # the listing, too
    assert "evil" in capsys.readouterr().out


def test_a_record_that_is_not_json_fails_on_the_first_attempt(records: Records) -> None:
    _, (job_id,) = _batch(records)
    records.r.hset(f"{PREFIX}job:{job_id}", "request", "{not json")
    with pytest.raises(MalformedRecord, match="not JSON"):
        records.begin(job_id, "w1")
    state, error = records.r.hmget(f"{PREFIX}job:{job_id}", "state", "error")
    assert state == b"failed" and b"malformed: its request is not JSON" in error
    assert records.begin(job_id, "w2") is None  # failed: never begun again


def test_a_queue_without_its_data_says_so(records: Records, redis_server: RedisServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = redis_server.url(DB)
    batch_id, _ = _batch(records, age_s=10)
    records.r.flushdb()  # what a restart without persistence does
    assert main(["batch", "status", "--queue", url, batch_id]) == 2
    err = capsys.readouterr().err
    assert "lost its data since the batch was submitted" in err and "appendonly yes" in err
    _batch(records)  # the server is used again after the restart: still said
    assert main(["batch", "status", "--queue", url, batch_id]) == 2
    assert "lost its data" in capsys.readouterr().err
    assert main(["batch", "status", "--queue", url, "20000101-000000-abcdef"]) == 2
    assert "it expired" in capsys.readouterr().err
    later = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() + 60)) + "-abcdef"
    assert main(["batch", "status", "--queue", url, later]) == 2  # never submitted, server intact
    err = capsys.readouterr().err
    assert "never submitted" in err and "lost" not in err


def _send_raw(client: Any, data: bytes) -> str:
    import uuid

    mid = str(uuid.uuid4())
    client.hset(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.msgs", mid, data)
    client.rpush(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}", mid)
    return mid


def test_message_alive_follows_dramatiqs_layout(records: Records) -> None:
    _, (job_id,) = _batch(records)
    broker = qb.make_broker(records.r)
    try:
        mid = qb.send_job(broker, job_id)
        assert qb.message_alive(records.r, mid)
        fetched = broker.do_fetch(qb.QUEUE_NAME, 1)  # now held in this (live) broker's ack set
        assert len(fetched) == 1 and qb.message_alive(records.r, mid)
        records.r.delete(f"{qb.NAMESPACE}:__acks__.{broker.broker_id}.{qb.QUEUE_NAME}")  # lost in a restart
        assert not qb.message_alive(records.r, mid)
        assert not qb.message_alive(records.r, "")
    finally:
        broker.close()


def test_an_undecodable_message_is_dead_lettered_when_fetched(records: Records) -> None:
    broker = qb.make_broker(records.r)
    try:
        bad = _send_raw(records.r, b"\xff not a dramatiq message")
        _, (job_id,) = _batch(records)
        qb.send_job(broker, job_id)
        fetched = broker.do_fetch(qb.QUEUE_NAME, 2)
        assert len(fetched) == 1 and json.loads(fetched[0])["args"] == [job_id]
        assert records.r.zscore(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.XQ", bad) is not None
        assert not records.r.hexists(f"{qb.NAMESPACE}:{qb.QUEUE_NAME}.msgs", bad)
    finally:
        broker.close()


def test_lost_candidates_are_running_jobs_without_a_live_worker(records: Records) -> None:
    from heyim_desktop.scale.records import WorkerStatus

    _, ids = _batch(records, 3)
    records.heartbeat(WorkerStatus("alive", "h", "m", "cpu", "rendering", ids[0], 0, time.time()))
    records.begin(ids[0], "alive", "m0")
    records.begin(ids[1], "ghost", "m1")
    records.begin(ids[2], "ghost", "m2")
    records.store_result(ids[2], "ghost", _result())  # finished before it died: not lost
    assert records.lost_candidates() == [(ids[1], "ghost", "m1")]
    assert records.claim_lost(ids[1], "ghost") is True
    assert records.claim_lost(ids[1], "ghost") is False  # a second reaper does nothing
    assert records.lost_candidates() == []
    assert records.r.hget(f"{PREFIX}job:{ids[1]}", "state") == b"queued"
