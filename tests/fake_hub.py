"""A fake Hugging Face Hub on 127.0.0.1 serving one model folder, with injectable faults.

It implements what HeyIm's downloader asks of huggingface_hub 2.x: ``GET /api/models/{repo}/
revision/{rev}?blobs=true`` (file list with sizes, LFS sha256, git blob ids) and ``HEAD``/``GET
/{repo}/resolve/{commit}/{path}`` (X-Repo-Commit, ETag, Content-Length; Range -> 206 with
Content-Range). Faults per file: "drop" (the first GET is cut mid-body), "corrupt" (one byte
flipped), "html" (an HTML error page with status 200 instead of the file).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"


class FakeHub:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._dropped: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def do_GET(self) -> None:
                hub._handle(self, head=False)

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, path: str) -> list[str | None]:
        return [r for m, p, r in self.requests if m == "GET" and p == path]

    def _sibling(self, name: str, data: bytes) -> dict[str, object]:
        if name.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            return {"rfilename": name, "size": len(data), "blobId": "b" * 40,
                    "lfs": {"size": len(data), "sha256": sha, "pointerSize": 134}}
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return {"rfilename": name, "size": len(data), "blobId": blob}

    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(req.path)
        path = unquote(url.path)
        api = f"/api/models/{self.repo_id}/revision/"
        resolve = f"/{self.repo_id}/resolve/"
        if path.startswith(api):
            body = json.dumps({"id": self.repo_id, "sha": COMMIT, "private": False,
                               "siblings": [self._sibling(n, d) for n, d in self.files.items()]}).encode()
            return self._send(req, 200, body, {"Content-Type": "application/json"}, head)
        if not path.startswith(resolve):
            return self._send(req, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        name = path[len(resolve):].split("/", 1)[1]
        self.requests.append((req.command, name, req.headers.get("Range")))
        if name not in self.files:
            return self._send(req, 404, b"entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, head)
        data = self.files[name]
        sib = self._sibling(name, data)
        etag = sib["lfs"]["sha256"] if "lfs" in sib else sib["blobId"]  # type: ignore[index]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if head:
            return self._send(req, 200, data, headers, head=True)
        fault = self.faults.get(name)
        if fault == "html":
            return self._send(req, 200, HTML, {"Content-Type": "text/html"}, head=False)
        if fault == "corrupt":
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
        start = 0
        rng = req.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        if fault == "drop" and name not in self._dropped:
            self._dropped.add(name)
            req.send_response(200)
            for k, v in headers.items():
                req.send_header(k, v)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data[: len(data) // 2])
            req.wfile.flush()
            req.close_connection = True
            return
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(req, 206, data[start:], headers, head=False)
        return self._send(req, 200, data, headers, head=False)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        req.send_response(code)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)
