"""A fake Hugging Face Hub on 127.0.0.1 serving one model folder, with injectable faults.

It implements what HeyIm's downloader asks of huggingface_hub 2.x: ``GET /api/models/{repo}/
revision/{rev}?blobs=true`` (file list with sizes, LFS sha256, git blob ids) and ``HEAD``/``GET
/{repo}/resolve/{commit}/{path}`` (X-Repo-Commit, ETag, Content-Length; Range -> 206 with
Content-Range). Faults per file: "drop" (the first GET is cut mid-body), "corrupt" (one byte
flipped), "html" (an HTML error page with status 200 instead of the file).

``add_repo`` serves more repositories from the same endpoint (an entry with extra sources, such as a
GGUF variant). Their files are named ``"{repo_id}/{path}"`` in ``requests``, ``gets`` and ``faults``;
the first repository's keep their plain paths.
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
        self.repos: dict[str, tuple[dict[str, bytes], str]] = {repo_id: (self.files, COMMIT)}
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

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> None:
        """Serve ``files`` (path -> bytes) as ``repo_id`` too, at a commit of its own."""
        self.repos[repo_id] = (files, hashlib.sha1(repo_id.encode()).hexdigest())

    def gets(self, path: str) -> list[str | None]:
        return [r for m, p, r in self.requests if m == "GET" and p == path]

    def _sibling(self, name: str, data: bytes) -> dict[str, object]:
        if name.endswith((".safetensors", ".gguf")):
            sha = hashlib.sha256(data).hexdigest()
            return {"rfilename": name, "size": len(data), "blobId": "b" * 40,
                    "lfs": {"size": len(data), "sha256": sha, "pointerSize": 134}}
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return {"rfilename": name, "size": len(data), "blobId": blob}

    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(req.path)
        path = unquote(url.path)
        for repo_id, (files, commit) in self.repos.items():
            api = f"/api/models/{repo_id}/revision/"
            resolve = f"/{repo_id}/resolve/"
            if path.startswith(api):
                body = json.dumps({"id": repo_id, "sha": commit, "private": False,
                                   "siblings": [self._sibling(n, d) for n, d in files.items()]}).encode()
                return self._send(req, 200, body, {"Content-Type": "application/json"}, head)
            if path.startswith(resolve):
                break
        else:
            return self._send(req, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        revision, name = path[len(resolve):].split("/", 1)
        if revision not in (commit, "main"):  # a file asked for at another repository's commit, say
            return self._send(req, 404, b"revision not found", {"X-Error-Code": "RevisionNotFound"}, head)
        key = name if repo_id == self.repo_id else f"{repo_id}/{name}"
        self.requests.append((req.command, key, req.headers.get("Range")))
        if name not in files:
            return self._send(req, 404, b"entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head)
        data = files[name]
        sib = self._sibling(name, data)
        etag = sib["lfs"]["sha256"] if "lfs" in sib else sib["blobId"]  # type: ignore[index]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if head:
            return self._send(req, 200, data, headers, head=True)
        fault = self.faults.get(key)
        if fault == "html":
            return self._send(req, 200, HTML, {"Content-Type": "text/html"}, head=False)
        if fault == "corrupt":
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
        start = 0
        rng = req.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        if fault == "drop" and key not in self._dropped:
            self._dropped.add(key)
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
