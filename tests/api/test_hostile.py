"""Hostile requests from the adversarial round: each is a 4xx naming the field, never a 5xx or a hang.

Also the front: sockets that send their request slowly are closed, open connections are
capped, and /health still answers meanwhile.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from api_helpers import AUTH, Gate, Running, call, png_b64, start_fake
from heyim_desktop.api.limits import MAX_INPUT_PIXELS, PixelBudget, parse_json
from heyim_desktop.api.mapping import ApiError

JSON = {"Content-Type": "application/json"}
SMALL = {"steps": 4, "width": 64, "height": 64}


def _png_claiming(width: int, height: int) -> str:
    """A PNG of a few bytes whose header claims ``width x height`` (how a decompression bomb starts)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/api/generate", "/sdapi/v1/options"])
@pytest.mark.parametrize("raw, status, field", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    (b'{"prompt": "x", "a": ' + b"[" * 100 + b"]" * 100 + b"}", 400, "a"),
    (b'{"prompt": "x", "subseed": ' + b"7" * 5000 + b"}", 422, "subseed"),
    (b'{"prompt": "x", "steps": -' + b"7" * 5000 + b"}", 422, "steps"),
    (b'{"prompt": "x", "eta": NaN}', 422, "eta"),
    (b'{"prompt": "x", "eta": Infinity}', 422, "eta"),
    (b'{"prompt": "x", "styles": [1, -Infinity]}', 422, "styles[1]"),
    (b'{"prompt": "x", "s_noise": 1e999}', 422, "s_noise"),
    (b'{"prompt": "a \\ud800 fox"}', 422, "prompt"),
    (b'{"prompt": "x", "override_settings": {"\\udfff": 1}}', 422, "override_settings"),
    (b'{"prompt": "x", "comments": {"k": "\\udc00"}}', 422, "comments.k"),
    (b'\xff\xfe{"prompt": "x"}', 400, "body"),
])
def test_hostile_json_is_a_4xx_naming_the_field(fake_api: Running, path: str, raw: bytes, status: int,
                                                field: str) -> None:
    reply = call(fake_api.port, "POST", path, raw=raw, headers=JSON)
    assert reply.status == status, reply.body
    assert reply.json["field"] == field and reply.json["success"] is False
    assert fake_api.queue.last_finished is None


def test_parse_json_accepts_what_clients_send() -> None:
    assert parse_json(b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9 \\ud83e\\udd8a", "seed": -1, "cfg": 7.5}') == {
        "prompt": "café 🦊", "seed": -1, "cfg": 7.5}
    with pytest.raises(ApiError) as info:
        parse_json(b"")
    assert info.value.status == 400


@pytest.mark.parametrize("path, body, field", [
    ("/sdapi/v1/img2img", {"prompt": "x", "init_images": [""], **SMALL}, "init_images"),
    ("/sdapi/v1/img2img", {"prompt": "x", "init_images": [png_b64(), "  "], **SMALL}, "init_images"),
    ("/api/generate", {"prompt": "x", "inputImage": "", **SMALL}, "inputImage"),
    ("/sdapi/v1/img2img", {"prompt": "x", "init_images": ["data:image/png;base64,"], **SMALL}, "init_images"),
])
def test_an_empty_input_image_is_a_422_not_text_to_image(fake_api: Running, path: str, body: dict[str, object],
                                                        field: str) -> None:
    reply = call(fake_api.port, "POST", path, body=body)
    assert reply.status == 422 and reply.json["field"] == field and "empty" in reply.json["error"]
    assert fake_api.queue.last_finished is None


def test_a_bodyless_interrupt_is_accepted(fake_api: Running) -> None:
    for headers in ({}, {"Content-Length": "0"}, {"Content-Type": "text/plain", "Content-Length": "0"}):
        reply = call(fake_api.port, "POST", "/sdapi/v1/interrupt", headers=headers)
        assert reply.status == 200 and reply.json == {}
    assert call(fake_api.port, "POST", "/sdapi/v1/skip").status == 200
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img")  # a route that needs a JSON body says so
    assert reply.status == 415 and reply.json["field"] == "Content-Type"
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img", raw=b"", headers=JSON)
    assert reply.status == 400 and reply.json["field"] == "body" and "empty" in reply.json["error"]


def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(fake_api: Running) -> None:
    for width, height in ((8192, 8192), (4097, 4096), (200_000, 200_000), (1, MAX_INPUT_PIXELS + 1)):
        reply = call(fake_api.port, "POST", "/sdapi/v1/img2img",
                     body={"prompt": "x", "init_images": [_png_claiming(width, height)], **SMALL})
        assert reply.status == 413 and reply.json["field"] == "init_images", reply.body
        assert "4096x4096" in reply.json["error"]
        assert f"{width}x{height}" in reply.json["error"] or "hundreds of millions" in reply.json["error"]
    assert fake_api.server.context.pixels.used == 0
    assert fake_api.queue.last_finished is None


def test_a_mask_claiming_too_many_pixels_is_refused_before_decoding(fake_api: Running) -> None:
    for path, body, field in (
        ("/sdapi/v1/img2img", {"prompt": "x", "init_images": [png_b64()], "mask": _png_claiming(8192, 8192),
                               **SMALL}, "mask"),
        ("/api/generate", {"prompt": "x", "inputImage": png_b64(), "maskImage": _png_claiming(8192, 8192),
                           **SMALL}, "maskImage"),
    ):
        reply = call(fake_api.port, "POST", path, body=body)
        assert reply.status == 413 and reply.json["field"] == field, reply.body
    assert fake_api.queue.last_finished is None and fake_api.server.context.pixels.used == 0


def test_the_whole_request_is_checked_before_any_decoding(fake_api: Running) -> None:
    # A bad setting after a valid (large) image: refused without decoding it or queueing anything.
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img",
                 body={"prompt": "x", "init_images": [_png_claiming(8192, 8192)], "denoising_strength": 0.1,
                       "steps": 2, "width": 64, "height": 64})
    assert reply.status == 422 and reply.json["field"] == "denoising_strength"
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img",
                 body={"prompt": "x", "init_images": [_png_claiming(8192, 8192)], "steps": 999})
    assert reply.status == 422 and reply.json["field"] == "steps"
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img", body={"prompt": "x", "init_images": ["aGVsbG8="], **SMALL})
    assert reply.status == 422 and "not an image format" in reply.json["error"]
    assert fake_api.queue.last_finished is None and fake_api.server.context.pixels.used == 0


def test_the_total_pixel_budget_refuses_with_413(fake_api: Running) -> None:
    budget = fake_api.server.context.pixels
    budget.total = 100 * 100
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img",
                 body={"prompt": "x", "init_images": [png_b64((128, 128))], **SMALL})
    assert reply.status == 413 and "at most 10,000 at once" in reply.json["error"]
    assert budget.used == 0
    budget.total = 128 * 128 + 64 * 64
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img",
                 body={"prompt": "x", "init_images": [png_b64((128, 128))], **SMALL})
    assert reply.status == 200 and budget.used == 0  # released when the job finished


def test_pixel_budget_counts_and_releases() -> None:
    budget = PixelBudget(total=100)
    with budget.hold(60, "a"):
        with pytest.raises(ApiError) as info:
            budget.reserve(41, "b")
        assert info.value.status == 413 and info.value.field == "b"
        budget.reserve(40, "c")
    assert budget.used == 40


@pytest.fixture()
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


def test_the_queue_holds_the_shrunk_input_image(gate: Gate) -> None:
    running, worker = start_fake(gate)
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(call, running.port, "POST", "/sdapi/v1/img2img",
                             body={"prompt": "x", "init_images": [png_b64((1024, 768))], **SMALL})
        assert gate.reached.wait(30)
        job = running.queue.running
        assert job is not None and job.request.init_image is not None
        assert job.request.init_image.size == (64, 64)  # decoded and shrunk before it was queued
        assert running.server.context.pixels.used == 64 * 64
        gate.release.set()
        assert future.result(30).status == 200
        assert running.server.context.pixels.used == 0
    finally:
        gate.release.set()
        pool.shutdown()
        running.server.stop()
        worker.stop(timeout=10)


# -- slow sockets and the connection cap -------------------------------------------------------
def _closed_by_server(sock: socket.socket, timeout: float = 20) -> bytes:
    """Everything the server sends until it closes the socket (fails after ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset, also closed
            return data or b"reset"
        if not chunk:
            return data
        data += chunk


def test_slow_sockets_are_freed_and_health_still_answers() -> None:
    running, worker = start_fake(header_timeout_s=0.5, body_timeout_s=0.5, max_connections=20)
    port = running.port
    sockets: list[socket.socket] = []
    try:
        head = f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        for _ in range(40):  # more than the cap: unfinished heads
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head)
            sockets.append(s)
        assert call(port, "GET", "/health", timeout=10).status == 200  # still answers
        body_stall = socket.create_connection(("127.0.0.1", port))
        sockets.append(body_stall)
        body_stall.sendall(f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: 1000\r\n\r\n{{\"prompt\": ".encode())
        replies = [_closed_by_server(s) for s in sockets]  # each is closed by the server, none hangs
        assert all(r in (b"", b"reset") or r.startswith(b"HTTP/1.1 408") for r in replies[:40])
        assert sum(r.startswith(b"HTTP/1.1 408") for r in replies) >= 1
        assert replies[-1] in (b"", b"reset")  # the stalled body: its request is dropped
        state = running.server._server.server_state  # type: ignore[union-attr]
        assert len(state.connections) <= 1  # all freed (a just-closing one may linger)
        assert call(port, "GET", "/health", timeout=10).status == 200
        assert running.queue.last_finished is None
    finally:
        for s in sockets:
            s.close()
        running.server.stop()
        worker.stop(timeout=10)


def test_connections_over_the_cap_close_the_oldest_unfinished_one() -> None:
    running, worker = start_fake(header_timeout_s=30, body_timeout_s=30, max_connections=10)
    port = running.port
    sockets: list[socket.socket] = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\n")  # never finished
            sockets.append(s)
        assert call(port, "GET", "/health", timeout=10).status == 200  # evicts the oldest
        first = _closed_by_server(sockets[0], timeout=10)
        assert first.startswith(b"HTTP/1.1 408")
        state = running.server._server.server_state  # type: ignore[union-attr]
        assert len(state.connections) <= 10
    finally:
        for s in sockets:
            s.close()
        running.server.stop()
        worker.stop(timeout=10)


def test_a_long_job_is_not_cut_by_the_read_deadlines(gate: Gate) -> None:
    running, worker = start_fake(gate, header_timeout_s=0.3, body_timeout_s=0.3)
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(call, running.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", **SMALL})
        assert gate.reached.wait(30)
        done = threading.Event()
        threading.Timer(1.0, done.set).start()  # longer than both deadlines
        done.wait()
        gate.release.set()
        reply = future.result(30)
        assert reply.status == 200 and len(reply.json["images"]) == 1
        json.loads(reply.json["info"])
    finally:
        gate.release.set()
        pool.shutdown()
        running.server.stop()
        worker.stop(timeout=10)
