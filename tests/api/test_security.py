"""Every security rule of the API, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest

from api_helpers import TOKEN, Running, call, start_fake
from heyim_desktop.api.security import TOKEN_ENV, allowed_hosts, resolve_token, token_file


@pytest.fixture(scope="module")
def fake_api() -> Iterator[Running]:
    """One server for the module: no test here runs a job."""
    running, worker = start_fake()
    yield running
    running.server.stop()
    worker.stop(timeout=10)


# -- the token -----------------------------------------------------------------------------
def test_token_comes_from_the_flag_then_the_environment_then_a_private_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert resolve_token("from-flag", tmp_path) == ("from-flag", "--token")
    assert resolve_token(None, tmp_path) == ("from-env", TOKEN_ENV)
    monkeypatch.delenv(TOKEN_ENV)
    token, source = resolve_token(None, tmp_path)
    assert len(token) >= 32 and source == str(token_file(tmp_path))
    assert resolve_token(None, tmp_path)[0] == token  # the same token on every start
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(token_file(tmp_path)).st_mode) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_loosened_token_file_is_made_private_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token, _ = resolve_token(None, tmp_path)
    os.chmod(token_file(tmp_path), 0o644)
    assert resolve_token(None, tmp_path)[0] == token
    assert stat.S_IMODE(os.stat(token_file(tmp_path)).st_mode) == 0o600


def test_allowed_hosts_are_the_loopback_names_with_the_port() -> None:
    assert allowed_hosts(5858) == {"127.0.0.1:5858", "localhost:5858", "[::1]:5858"}
    assert "myhost.lan:5858" in allowed_hosts(5858, ["MyHost.lan"])
    assert "[fe80::1]:5858" in allowed_hosts(5858, ["fe80::1"])


# -- authentication ----------------------------------------------------------------------------
def test_health_needs_no_token(fake_api: Running) -> None:
    reply = call(fake_api.port, "GET", "/health", auth=False)
    assert (reply.status, reply.body) == (200, b"OK")


@pytest.mark.parametrize("path", ["/api/status", "/api/models", "/sdapi/v1/sd-models", "/sdapi/v1/progress",
                                  "/openapi.json", "/no/such/route"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer ", f"Token {TOKEN}", TOKEN])
def test_every_other_route_refuses_a_missing_or_wrong_token(fake_api: Running, path: str,
                                                            authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    reply = call(fake_api.port, "GET", path, auth=False, headers=headers)
    assert reply.status == 401
    assert reply.json["field"] == "Authorization" and "token" in reply.json["error"]
    assert 'Bearer realm="HeyIm"' in (reply.header("www-authenticate") or "")


def test_posts_refuse_a_wrong_token_before_running_anything(fake_api: Running) -> None:
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x"}, auth=False,
                 headers={"Authorization": "Bearer nope"})
    assert reply.status == 401
    assert fake_api.queue.last_finished is None


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a1111_routes_accept_the_token_as_basic_auth_password(fake_api: Running) -> None:
    assert call(fake_api.port, "GET", "/sdapi/v1/samplers", auth=False, headers=_basic("anyone", TOKEN)).status == 200
    wrong = call(fake_api.port, "GET", "/sdapi/v1/samplers", auth=False, headers=_basic("anyone", "nope"))
    assert wrong.status == 401 and 'Basic realm="HeyIm"' in (wrong.header("www-authenticate") or "")
    garbage = call(fake_api.port, "GET", "/sdapi/v1/samplers", auth=False, headers={"Authorization": "Basic %%%"})
    assert garbage.status == 401


def test_basic_auth_is_only_for_the_a1111_routes(fake_api: Running) -> None:
    assert call(fake_api.port, "GET", "/api/status", auth=False, headers=_basic("u", TOKEN)).status == 401


# -- Host and Origin ----------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "localhost", "", "127.0.0.1.nip.io:{port}"])
def test_a_foreign_host_header_is_refused(fake_api: Running, host: str) -> None:
    reply = call(fake_api.port, "GET", "/health", host=host.format(port=fake_api.port), auth=False)
    assert reply.status == 400 and reply.json["field"] == "Host"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "LOCALHOST:{port}"])
def test_loopback_host_headers_are_accepted(fake_api: Running, host: str) -> None:
    assert call(fake_api.port, "GET", "/api/status", host=host.format(port=fake_api.port)).status == 200


def test_an_extra_host_name_can_be_allowed() -> None:
    running, worker = start_fake(extra_hosts=["studio.lan"])
    try:
        assert call(running.port, "GET", "/health", host=f"studio.lan:{running.port}", auth=False).status == 200
        assert call(running.port, "GET", "/health", host=f"other.lan:{running.port}", auth=False).status == 400
    finally:
        running.server.stop()
        worker.stop(timeout=10)


@pytest.mark.parametrize("origin", ["https://evil.example", "http://evil.example:5858", "null",
                                    "http://localhost.evil.example", "https://localhost:3000", "file://"])
def test_a_foreign_origin_is_refused(fake_api: Running, origin: str) -> None:
    for method, path, body in (("GET", "/api/status", None), ("POST", "/sdapi/v1/interrupt", {})):
        reply = call(fake_api.port, method, path, body=body, headers={"Origin": origin})
        assert reply.status == 403 and reply.json["field"] == "Origin"
        assert reply.header("access-control-allow-origin") is None


@pytest.mark.parametrize("origin", ["http://localhost:5859", "http://127.0.0.1:3000", "http://[::1]:8080", "http://localhost"])
def test_a_local_origin_is_echoed_never_a_wildcard(fake_api: Running, origin: str) -> None:
    reply = call(fake_api.port, "GET", "/api/status", headers={"Origin": origin})
    assert reply.status == 200
    assert reply.header("access-control-allow-origin") == origin
    preflight = call(fake_api.port, "OPTIONS", "/api/generate", auth=False, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 200
    assert preflight.header("access-control-allow-origin") == origin
    assert "POST" in (preflight.header("access-control-allow-methods") or "")
    assert "*" not in (preflight.header("access-control-allow-origin") or "")


def test_no_response_carries_a_wildcard_origin(fake_api: Running) -> None:
    for path in ("/health", "/api/status", "/sdapi/v1/options"):
        assert call(fake_api.port, "GET", path).header("access-control-allow-origin") is None


# -- request shape and size -----------------------------------------------------------------------
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_posts_must_be_json(fake_api: Running, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img", raw=b'{"prompt": "a fox"}', headers=headers)
    assert reply.status == 415 and reply.json["field"] == "Content-Type"
    assert fake_api.queue.last_finished is None


def test_json_with_a_charset_is_fine(fake_api: Running) -> None:
    reply = call(fake_api.port, "POST", "/sdapi/v1/interrupt", raw=b"{}",
                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 200


def test_state_changes_only_by_post(fake_api: Running) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        reply = call(fake_api.port, method, "/sdapi/v1/txt2img", raw=b"{}" if method != "GET" else None,
                     headers={"Content-Type": "application/json"})
        assert reply.status == 405, method


def test_an_11_mb_body_gets_413(fake_api: Running) -> None:
    big = b'{"prompt": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    reply = call(fake_api.port, "POST", "/api/generate", raw=big, headers={"Content-Type": "application/json"})
    assert reply.status == 413 and "10 MB" in reply.json["error"]
    assert fake_api.queue.last_finished is None


def test_an_11_mb_chunked_body_without_length_gets_413(fake_api: Running) -> None:
    chunk = b"a" * (1024 * 1024)
    reply = call(fake_api.port, "POST", "/api/generate", chunks=[b'{"prompt": "', *[chunk] * 11, b'"}'],
                 headers={"Content-Type": "application/json"})
    assert reply.status == 413


def test_malformed_json_is_a_400_naming_the_body(fake_api: Running) -> None:
    reply = call(fake_api.port, "POST", "/api/generate", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json["field"] == "body"
