"""The adversarial round against the local API, re-run: 5xx count, hangs, sockets, memory.

    .venv/bin/python bench/adversarial_api.py [--src PATH] [--fuzz 400] [--fd-limit 256]

Starts the real ``heyim-desktop serve --demo`` in a subprocess (a throwaway data folder, the
file-descriptor limit lowered to ``--fd-limit`` as in the round), then sends:

* hostile JSON to every POST route: nesting 100,000 deep, 5,000-digit integers, NaN,
  Infinity and 1e999 in ignored fields, lone surrogates in prompts and keys, bad UTF-8;
* ``--fuzz`` seeded random mutations of valid txt2img/img2img/generate bodies (wrong types,
  huge numbers, truncations, junk bytes);
* empty ``init_images`` entries, bodyless POSTs (``/sdapi/v1/interrupt``);
* images that compress well but decode huge: three 8192x8192 PNGs at once, then four
  concurrent 4096x4096 img2img requests (accepted, shrunk to 64x64 before queueing);
* 300 sockets that never finish their request head and 12 that never finish their body,
  checking ``/health`` answers meanwhile and timing how long until the server frees them.

Prints the status counts, the 5xx count, the hangs (no answer within ``--timeout``), how long
the slow sockets stayed open, and the server's RSS before, at peak (VmHWM) and after.
``--src`` points at another checkout's ``src`` to run the same round against it (before/after).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TOKEN = "adversarial-bench-token"
ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/api/generate", "/sdapi/v1/options")
SMALL = {"steps": 2, "width": 64, "height": 64}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Client:
    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.statuses: Counter[int] = Counter()
        self.hangs = 0
        self.errors: Counter[str] = Counter()
        self.five: list[str] = []

    def send(self, method: str, path: str, raw: bytes | None = None, ctype: str | None = "application/json",
             label: str = "") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {TOKEN}", "Host": f"127.0.0.1:{self.port}"}
        if raw is not None:
            headers["Content-Length"] = str(len(raw))
            if ctype:
                headers["Content-Type"] = ctype
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if raw:
                try:
                    conn.send(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            resp = conn.getresponse()
            body = resp.read()
            self.statuses[resp.status] += 1
            if resp.status >= 500:
                self.five.append(f"{resp.status} {label or path}: {body[:160]!r}")
            return resp.status
        except socket.timeout:
            self.hangs += 1
            self.errors["timeout"] += 1
            return -1
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            self.errors[type(exc).__name__] += 1
            return -2
        finally:
            conn.close()

    def post_json(self, path: str, body: Any, label: str = "") -> int:
        return self.send("POST", path, json.dumps(body).encode(), label=label)


def png_b64(width: int, height: int, noisy: bool = False) -> str:
    from PIL import Image

    if noisy:
        image = Image.effect_noise((width, height), 40).convert("RGB")
    else:
        image = Image.new("RGB", (width, height), (30, 90, 200))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=9)
    return base64.b64encode(buf.getvalue()).decode()


def hostile_json(client: Client) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    bodies: list[tuple[str, bytes]] = [
        ("deep", deep),
        ("deep-object", b'{"prompt": "x", "a": ' + b'{"b": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"),
        ("5000 digits ignored", b'{"prompt": "x", "subseed": ' + b"9" * 5000 + b"}"),
        ("5000 digits steps", b'{"prompt": "x", "steps": ' + b"9" * 5000 + b"}"),
        ("4300 digits", b'{"prompt": "x", "seed": ' + b"9" * 4300 + b"}"),
        ("NaN", b'{"prompt": "x", "eta": NaN}'),
        ("Infinity", b'{"prompt": "x", "s_noise": Infinity, "steps": 2}'),
        ("-Infinity", b'{"prompt": "x", "styles": [-Infinity]}'),
        ("1e999", b'{"prompt": "x", "cfg_scale": 1e999}'),
        ("surrogate prompt", b'{"prompt": "a \\ud800 fox", "steps": 2, "width": 64, "height": 64}'),
        ("surrogate negative", b'{"prompt": "x", "negative_prompt": "\\udfff", "steps": 2}'),
        ("surrogate key", b'{"prompt": "x", "\\udc00": 1}'),
        ("bad utf-8", b'{"prompt": "\xff\xfe"}'),
        ("truncated", b'{"prompt": "x", "steps": '),
        ("not json", b"<xml/>"),
        ("array", b"[1, 2, 3]"),
        ("null", b"null"),
    ]
    for route in ROUTES:
        for label, raw in bodies:
            client.send("POST", route, raw, label=f"{label} -> {route}")


def empties_and_bodyless(client: Client) -> None:
    client.post_json("/sdapi/v1/img2img", {"prompt": "x", "init_images": [""], **SMALL}, "empty init_images")
    client.post_json("/sdapi/v1/img2img", {"prompt": "x", "init_images": ["data:image/png;base64,"], **SMALL})
    client.post_json("/api/generate", {"prompt": "x", "inputImage": "", **SMALL}, "empty inputImage")
    for _ in range(3):
        client.send("POST", "/sdapi/v1/interrupt", None, ctype=None, label="bodyless interrupt")
    client.send("POST", "/sdapi/v1/txt2img", None, ctype=None, label="bodyless txt2img")


def fuzz(client: Client, count: int, seed: int) -> None:
    rng = random.Random(seed)
    small_image = png_b64(72, 56)
    templates: list[tuple[str, dict[str, Any]]] = [
        ("/sdapi/v1/txt2img", {"prompt": "a fox", "negative_prompt": "", "seed": 1, "sampler_name": "Euler a",
                               "batch_size": 1, "cfg_scale": 7, **SMALL}),
        ("/sdapi/v1/img2img", {"prompt": "a fox", "init_images": [small_image], "denoising_strength": 0.6,
                               "seed": 2, **SMALL}),
        ("/api/generate", {"prompt": "a fox", "negativePrompt": "", "seed": 3, "cfgScale": 5, **SMALL}),
    ]
    junk: list[Any] = [None, True, False, -1, 0, 2**63, -(2**70), 1e308, -1e-308, 3.5, "", "x" * 20_000, [], {},
                       [1] * 1000, {"a": {"b": [None]}}, "\u202e\u0000", "Euler a" * 100, "../../etc/passwd"]
    for i in range(count):
        route, template = rng.choice(templates)
        body = dict(template)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*body, "styles", "override_settings", "alwayson_scripts", "enable_hr", "mask",
                              "init_images", "inputImage", "sd_model_checkpoint", "batch_size", "n_iter"])
            body[key] = rng.choice(junk)
        raw = json.dumps(body).encode()
        if rng.random() < 0.1:
            raw = raw[: rng.randint(1, len(raw))]
        elif rng.random() < 0.05:
            pos = rng.randrange(len(raw))
            raw = raw[:pos] + bytes([rng.randrange(256)]) + raw[pos + 1:]
        client.send("POST", route, raw, label=f"fuzz {i} -> {route}")


def big_images(client: Client) -> None:
    print("  encoding 8192x8192 and 4096x4096 test images ...", flush=True)
    huge = png_b64(8192, 8192)
    large = png_b64(4096, 4096)
    print(f"  8192x8192 PNG: {len(huge) * 3 // 4 // 1024} KB; 4096x4096 PNG: {len(large) * 3 // 4 // 1024} KB")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.post_json("/sdapi/v1/img2img", {"prompt": "x", "init_images": [huge], **SMALL},
                                                 "8192 img2img"), range(3)))
        list(pool.map(lambda _: client.post_json("/sdapi/v1/img2img", {"prompt": "x", "init_images": [large], **SMALL},
                                                 "4096 img2img"), range(4)))
        list(pool.map(lambda _: client.post_json("/api/generate", {"prompt": "x", "inputImage": huge, **SMALL},
                                                 "8192 generate"), range(3)))


def slow_sockets(port: int, heads: int, bodies: int, client: Client) -> dict[str, Any]:
    held: list[socket.socket] = []
    opened = time.monotonic()
    refused = 0
    head = f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    body = (f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"prompt\": \"").encode()
    for i in range(heads + bodies):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head if i < heads else body)
            held.append(s)
        except OSError:
            refused += 1
    health = [client.send("GET", "/health", label="health during slow sockets") for _ in range(5)]
    closed_after: list[float] = []
    for s in held:
        s.settimeout(max(1.0, 60 - (time.monotonic() - opened)))
        try:
            while s.recv(4096):
                pass
            closed_after.append(time.monotonic() - opened)
        except ConnectionResetError:
            closed_after.append(time.monotonic() - opened)
        except (socket.timeout, OSError):
            pass
        finally:
            s.close()
    return {"held": len(held), "refused_at_connect": refused, "health": health,
            "freed": len(closed_after), "still_open_after_60s": len(held) - len(closed_after),
            "max_open_s": max(closed_after) if closed_after else None}


def start_server(src: Path, data: Path, fd_limit: int) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", HEYIM_DATA_DIR=str(data), HF_HUB_OFFLINE="1")

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    proc = subprocess.Popen([sys.executable, "-m", "heyim_desktop.cli", "serve", "--demo", "--port", "0",
                             "--token", TOKEN, "--device", "cpu"], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"HeyIm API on http://127\.0\.0\.1:(\d+)", line)
        if m:
            import threading

            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(m.group(1))
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--fuzz", type=int, default=400)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--fd-limit", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=60.0, help="a request unanswered this long is a hang")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(args.src.resolve(), Path(tmp), args.fd_limit)
        client = Client(port, args.timeout)
        try:
            t0 = time.perf_counter()
            client.post_json("/sdapi/v1/txt2img", {"prompt": "warm up", **SMALL}, "warm-up")  # model loaded
            before = rss_kb(proc.pid)
            print(f"server pid {proc.pid} on port {port}; RSS after warm-up {before / 1024:.0f} MB")
            phases = [("hostile JSON", lambda: hostile_json(client)),
                      ("empty images, bodyless POSTs", lambda: empties_and_bodyless(client)),
                      (f"fuzz x{args.fuzz}", lambda: fuzz(client, args.fuzz, args.seed)),
                      ("huge images", lambda: big_images(client))]
            for label, phase in phases:
                started = time.perf_counter()
                phase()
                print(f"  {label}: done in {time.perf_counter() - started:.0f}s; so far "
                      f"{sum(n for s, n in client.statuses.items() if s >= 500)} 5xx, {client.hangs} hangs; "
                      f"RSS {rss_kb(proc.pid) / 1024:.0f} MB (peak {rss_kb(proc.pid, 'VmHWM') / 1024:.0f} MB)",
                      flush=True)
            sockets = slow_sockets(port, 300, 12, client)
            after = rss_kb(proc.pid)
            peak = rss_kb(proc.pid, "VmHWM")
            alive = client.send("GET", "/health", label="health at the end")
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    total = sum(client.statuses.values()) + sum(client.errors.values())
    print(f"requests: {total} in {elapsed:.0f}s; statuses: {dict(sorted(client.statuses.items()))}; "
          f"client errors: {dict(client.errors)}")
    print(f"5xx: {sum(n for s, n in client.statuses.items() if s >= 500)}")
    for line in client.five[:20]:
        print(f"  {line}")
    print(f"hangs (no answer in {args.timeout:g}s): {client.hangs}")
    print(f"slow sockets: {sockets}")
    print(f"/health at the end: {alive}")
    print(f"RSS: before {before / 1024:.0f} MB, peak {peak / 1024:.0f} MB, after {after / 1024:.0f} MB")


if __name__ == "__main__":
    main()
