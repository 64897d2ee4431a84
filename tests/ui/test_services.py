"""Preferences switches for the local API and the Redis render queue, from the running app."""

from __future__ import annotations

import base64
import http.client
import json
import socket

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core import paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(port: int, method: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_api_switch_serves_from_the_app_queue_into_history(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window)
    port = _free_port()
    window.apply_preferences(window.prefs.replace(api_enabled=True, api_port=port))
    qtbot.waitUntil(lambda: window.services.api.url is not None, timeout=30_000)
    assert window.services.api.url == f"http://127.0.0.1:{port}"
    assert _call(port, "GET", "/health") == (200, b"OK")
    token = (paths.data_dir() / "api-token").read_text().strip()
    assert _call(port, "GET", "/api/status")[0] == 401  # the token is required
    window.prefs = window.prefs.replace(memory="low")  # cmd-flags read the Preferences as they are now
    flags = json.loads(_call(port, "GET", "/sdapi/v1/cmd-flags", token)[1])
    assert flags["lowvram"] is True and flags["precision"] == "autocast"
    window.prefs = window.prefs.replace(memory="auto")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS):
        # The window's selected model (the demo) is the API's default; the app's worker runs the job.
        from threading import Thread

        box: dict = {}
        t = Thread(target=lambda: box.update(r=_call(port, "POST", "/sdapi/v1/txt2img", token,
                                                        {"prompt": "from the api", "steps": 2, "width": 64,
                                                         "height": 64, "seed": 5})))
        t.start()
    t.join(60)
    status, data = box["r"]
    assert status == 200, data
    answer = json.loads(data)
    assert base64.b64decode(answer["images"][0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert parts.store.count(query="api") == 1
    assert window.history.model.rowCount() == 1
    window.apply_preferences(window.prefs.replace(api_enabled=False))
    qtbot.waitUntil(lambda: window.services.api.server is None, timeout=30_000)
    parts.window.services.api._pool.waitForDone(10_000)
    try:
        _call(port, "GET", "/health")
        raise AssertionError("the server still answers after the switch was turned off")
    except OSError:
        pass


def test_a_taken_port_is_a_banner_not_a_crash(parts, qtbot) -> None:
    window = parts.window
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        window.apply_preferences(window.prefs.replace(api_enabled=True, api_port=port))
        qtbot.waitUntil(lambda: "could not start" in window.banner.message(), timeout=30_000)
    assert "could not start" in window.banner.message() and str(port) in window.banner.message()
    assert window.services.api.server is None


def test_bad_render_queue_url_is_refused_by_preferences(qtbot, data_dir) -> None:
    from heyim_desktop.store.preferences import Preferences
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog
    from heyim_desktop.ui.qt import QMessageBox

    dialog = PreferencesDialog(Preferences())
    qtbot.addWidget(dialog)
    dialog.remote_queue.setText("http://not-redis")
    shown: list[str] = []
    original = QMessageBox.warning
    QMessageBox.warning = staticmethod(lambda *a, **k: shown.append(a[2]))  # type: ignore[method-assign]
    try:
        dialog.accept()
    finally:
        QMessageBox.warning = original  # type: ignore[method-assign]
    assert shown and "redis://" in shown[0]
    assert dialog.result() == 0  # still open
    dialog.remote_queue.setText("redis://127.0.0.1:6379/0")
    dialog.api_enabled.setChecked(True)
    dialog.accept()
    prefs = dialog.result_preferences()
    assert prefs.remote_queue_url == "redis://127.0.0.1:6379/0" and prefs.api_enabled


def test_generate_goes_to_the_render_queue_when_one_is_set(parts, qtbot, monkeypatch) -> None:
    window = parts.window
    quick_settings(window)
    sent: list = []

    class FakeRemote:
        url = "redis://127.0.0.1:1/0"
        open_batches: list = []

        def submit(self, requests, name=""):  # type: ignore[no-untyped-def]
            sent.extend(requests)

            class S:
                batch_id = "b1"
            return S()

    window.services.remote.remote = FakeRemote()
    window.prompt_panel.set_prompt("render elsewhere")
    assert window.generate() is None  # nothing queued locally
    assert parts.queue.pending() == [] and parts.queue.running is None
    qtbot.waitUntil(lambda: "batch b1" in window.statusBar().currentMessage(), timeout=10_000)
    assert len(sent) == 1 and sent[0].prompt == "render elsewhere" and sent[0].seed is not None


def test_finished_remote_images_arrive_in_the_grid_and_failures_in_a_banner(parts, qtbot) -> None:
    from conftest import make_result
    from heyim_desktop.scale.client import Collected

    window = parts.window
    entry = parts.store.save_result(make_result("rendered elsewhere", seed=3))[0]

    class FakeRemote:
        url = "redis://127.0.0.1:1/0"
        open_batches = ["b1"]

        def poll(self):  # type: ignore[no-untyped-def]
            self.open_batches = []
            return Collected(saved=(entry,), already=0, failed=(("job-9", "Model folder not found: x"),), pending=0)

    window.services.remote.remote = FakeRemote()
    window.services.remote.poll()
    qtbot.waitUntil(lambda: window.history.model.rowCount() == 1, timeout=10_000)
    assert window.history.model.entry_at(0).prompt == "rendered elsewhere"
    qtbot.waitUntil(lambda: window.banner.isVisible() and window.banner.kind != "info", timeout=10_000)
    assert "job-9" in window.banner.message() and "Model folder not found" in window.banner.message()
