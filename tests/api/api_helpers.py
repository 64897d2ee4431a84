"""A small real HTTP client over http.client (full control of Host, Origin and bodies)."""

from __future__ import annotations

import atexit
import base64
import http.client
import io
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress
from heyim_desktop.models.hashes import ModelHashes
from heyim_desktop.store.styles import StyleBook

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def call(port: int, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None, host: str | None = None, auth: bool = True,
         chunks: Iterable[bytes] | None = None, timeout: float = 60) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": host if host is not None else f"127.0.0.1:{port}"}
        if auth:
            hdrs.update(AUTH)
        if body is not None:
            raw = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        hdrs.update(headers or {})
        if chunks is not None:
            hdrs["Transfer-Encoding"] = "chunked"
        elif raw is not None:
            hdrs["Content-Length"] = str(len(raw))
        for key, value in hdrs.items():
            conn.putheader(key, value)
        conn.endheaders()
        try:
            if chunks is not None:
                for chunk in chunks:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif raw is not None:
                conn.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413) and closed; its reply is still readable
        resp = conn.getresponse()
        merged: dict[str, str] = {}
        for key, value in resp.getheaders():  # repeated headers (WWW-Authenticate) are joined
            key = key.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return Reply(resp.status, merged, resp.read())
    finally:
        conn.close()


def png_b64(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_png(data: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    return img


class Gate:
    """Holds a fake job at its first step until the test releases it (no sleeping)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()


class FakeEngine:
    """An engine with the real contract that makes flat images at once (or waits at a Gate)."""

    name = "fake"
    default_size = (64, 64)
    fixed_size = None

    def __init__(self, model_name: str, gate: Gate | None = None) -> None:
        self.model_name = model_name
        self.gate = gate

    def generate(self, request: GenerationRequest, progress: Any = None, cancel: Any = None) -> GenerationResult:
        request = request.with_seed()
        preview = np.full((8, 8, 3), 128, dtype=np.uint8)
        for step in range(1, request.steps + 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress is not None:
                progress(Progress(step, request.steps, 0.0, preview=preview if step == 1 else None))
            if self.gate is not None and step == 1:
                self.gate.reached.set()
                assert self.gate.release.wait(30), "the test never released the gate"
        images = tuple(
            GeneratedImage(Image.new("RGB", (request.width, request.height), (10, 20, 30)), seed, i)
            for i, seed in enumerate(request.image_seeds())
        )
        return GenerationResult(request, images, self.model_name, self.name, {"total": 0.0})

    def close(self) -> None:
        pass


@dataclass
class Running:
    server: ApiServer
    queue: JobQueue
    host: EngineHost
    store: Any = None

    @property
    def port(self) -> int:
        return self.server.port


def fake_loader(gate: Gate | None = None):  # type: ignore[no-untyped-def]
    def load(ref: str) -> FakeEngine:
        if ref not in ("alpha", "beta"):
            raise ModelError(f"Model not found: {ref}")
        return FakeEngine(ref, gate)

    return load


FAKE_MODELS = fixed_catalog(ModelChoice("Alpha", "alpha"), ModelChoice("Beta", "beta", "/models/beta"))
#: Servers in these tests keep styles and model hashes in a private temporary folder.
_PRIVATE = Path(tempfile.mkdtemp(prefix="heyim-api-tests-"))
atexit.register(shutil.rmtree, _PRIVATE, True)
FUZZ_STYLES = StyleBook(_PRIVATE / "styles.csv")


def private_styles(name: str = "styles.csv") -> StyleBook:
    return StyleBook(_PRIVATE / name)


def private_hashes() -> ModelHashes:
    return ModelHashes(_PRIVATE / "model-hashes.json")


def start_fake(gate: Gate | None = None, **server_kw: Any) -> tuple[Running, WorkerThread]:
    queue = JobQueue()
    host = EngineHost(fake_loader(gate), default_model="alpha")
    saved: list[Any] = []
    worker = WorkerThread(queue, host, lambda result, job: tuple(saved.append(result) or [f"fake-{job.id}"]))
    worker.start()
    kw: dict[str, Any] = dict(token=TOKEN, port=0, engine_host=host, default_model="alpha", models=FAKE_MODELS,
                              styles=FUZZ_STYLES, hashes=private_hashes())
    kw.update(server_kw)
    server = ApiServer(queue, **kw)
    server.start()
    return Running(server, queue, host, saved), worker
