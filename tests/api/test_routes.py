"""Every route over real HTTP on 127.0.0.1: the tiny real model for generation, fakes for timing."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from api_helpers import Running, call, decode_png, png_b64, start_fake
from heyim_desktop.core.jobs import Job, JobState

SMALL = {"steps": 4, "width": 64, "height": 64}


# -- generation with the real tiny model, landing in the real history ------------------------------
def test_txt2img_returns_pngs_with_parameters_and_lands_in_history(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img",
                 body={"prompt": "a red fox", "negative_prompt": "blur", "seed": 42, "batch_size": 2, "cfg_scale": 6,
                       "sampler_name": "Euler a", "restore_faces": False, **SMALL})
    assert reply.status == 200, reply.body
    data = reply.json
    assert len(data["images"]) == 2 and data["parameters"]["prompt"] == "a red fox"
    image = decode_png(data["images"][0])
    assert image.size == (64, 64) and "Seed: 42" in image.info["parameters"]
    info = json.loads(data["info"])
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42 and info["sampler_name"] == "Euler a"
    assert info["cfg_scale"] == 6 and info["width"] == 64 and len(info["infotexts"]) == 2
    assert "Negative prompt: blur" in info["infotexts"][0]
    assert len(info["history_ids"]) == 2
    _assert_in_history(real_api, info["history_ids"], "a red fox")


def _assert_in_history(api: Running, ids: list[object], prompt: str) -> None:
    for entry_id in ids:
        entry = api.store.get(entry_id)
        assert entry is not None and entry.prompt == prompt and entry.path.is_file() and entry.source == "api"


def test_same_seed_same_image(real_api: Running) -> None:
    body = {"prompt": "a red fox", "seed": 7, **SMALL}
    first = call(real_api.port, "POST", "/sdapi/v1/txt2img", body=body).json["images"][0]
    second = call(real_api.port, "POST", "/sdapi/v1/txt2img", body=body).json["images"][0]
    assert decode_png(first).tobytes() == decode_png(second).tobytes()


def test_img2img(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/img2img",
                 body={"prompt": "a blue fox", "init_images": [png_b64((80, 48))], "denoising_strength": 0.5,
                       "seed": 1, "include_init_images": False, **SMALL})
    assert reply.status == 200, reply.body
    info = json.loads(reply.json["info"])
    assert info["denoising_strength"] == 0.5 and reply.json["parameters"]["init_images"] is None  # as AUTOMATIC1111
    assert decode_png(reply.json["images"][0]).size == (64, 64)
    _assert_in_history(real_api, info["history_ids"], "a blue fox")


def test_send_images_false_returns_no_images(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "quiet", "send_images": False, **SMALL})
    assert reply.status == 200 and reply.json["images"] == []
    assert len(json.loads(reply.json["info"])["history_ids"]) == 1


def test_heyim_generate(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/api/generate",
                 body={"prompt": "a green fox", "negativePrompt": "", "cfgScale": 5, "seed": 9, "scheduler": "DDIM",
                       **SMALL})
    assert reply.status == 200, reply.body
    data = reply.json
    meta = data["metadata"]
    assert data["success"] is True and data["imageBase64"] == data["images"][0]
    assert (meta["seed"], meta["cfgScale"], meta["scheduler"], meta["model"]) == (9, 5, "DDIM", "tiny-sd")
    assert meta["generationTime"] > 0 and meta["hasInputImage"] is False and len(meta["historyIds"]) == 1
    assert decode_png(data["imageBase64"]).size == (64, 64)
    img = call(real_api.port, "POST", "/api/generate",
               body={"prompt": "a green fox", "inputImage": png_b64(), "strength": 0.5, **SMALL}).json
    assert img["metadata"]["hasInputImage"] is True and img["metadata"]["strength"] == 0.5


def test_invalid_values_are_422_naming_the_field_and_run_nothing(real_api: Running) -> None:
    before = real_api.queue.last_finished
    for path, body, field in (("/api/generate", {"prompt": "x", "steps": 500}, "steps"),
                              ("/sdapi/v1/txt2img", {"prompt": "x", "cfg_scale": "high"}, "cfg_scale"),
                              ("/sdapi/v1/img2img", {"prompt": "x", "init_images": ["bm90IGFuIGltYWdl"]}, "init_images"),
                              ("/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}},
                               "override_settings.sd_model_checkpoint")):
        reply = call(real_api.port, "POST", path, body=body)
        assert reply.status == 422 and reply.json["field"] == field, (path, reply.body)
        assert reply.json["error"].startswith(field)
    assert real_api.queue.last_finished is before


def test_status_and_models_report_the_loaded_model(real_api: Running) -> None:
    call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "warm up", **SMALL})
    status = call(real_api.port, "GET", "/api/status").json
    assert status["modelStatus"] == "loaded" and status["currentModel"] == "tiny-sd"
    assert status["isGenerating"] is False and status["queueSize"] == 0 and status["lastGenerationTime"] > 0
    models = call(real_api.port, "GET", "/api/models").json
    assert models["current"] == "tiny-sd"
    assert models["models"] == [{"name": "tiny-sd", "ref": models["models"][0]["ref"], "loaded": True, "default": True,
                                 "base": None}]
    sd = call(real_api.port, "GET", "/sdapi/v1/sd-models").json
    # the txt2img above hashed the model, so its title carries AUTOMATIC1111's short hash
    assert sd[0]["model_name"] == "tiny-sd" and sd[0]["filename"] and len(sd[0]["sha256"]) == 64
    assert sd[0]["hash"] == sd[0]["sha256"][:10] and sd[0]["title"] == f"tiny-sd [{sd[0]['hash']}]"


# -- listing routes -------------------------------------------------------------------------------
def test_samplers_schedulers_and_options(fake_api: Running) -> None:
    samplers = call(fake_api.port, "GET", "/sdapi/v1/samplers").json
    names = [s["name"] for s in samplers]
    assert "DPM++ 2M" in names and "Euler a" in names and all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert [s["name"] for s in call(fake_api.port, "GET", "/sdapi/v1/schedulers").json] == ["automatic", "karras"]
    assert call(fake_api.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"] == "Alpha"


def test_options_switch_the_model_for_later_jobs(fake_api: Running) -> None:
    assert call(fake_api.port, "POST", "/sdapi/v1/options", body={"sd_model_checkpoint": "Beta", "other": 1}).status == 200
    assert call(fake_api.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"] == "Beta"
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", **SMALL})
    assert json.loads(reply.json["info"])["sd_model_name"] == "Beta"
    assert call(fake_api.port, "GET", "/api/models").json["current"] == "Beta"
    # by path (sd-models' filename) and by the "name [hash]" title form, too
    assert call(fake_api.port, "POST", "/sdapi/v1/options", body={"sd_model_checkpoint": "Alpha [abc123]"}).status == 200
    assert call(fake_api.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"] == "Alpha"
    assert call(fake_api.port, "POST", "/sdapi/v1/options", body={"sd_model_checkpoint": "/models/beta"}).status == 200
    bad = call(fake_api.port, "POST", "/sdapi/v1/options", body={"sd_model_checkpoint": "Gamma"})
    assert bad.status == 422 and bad.json["field"] == "sd_model_checkpoint" and "Alpha" in bad.json["error"]
    assert call(fake_api.port, "POST", "/sdapi/v1/options", body=[]).status == 422


def test_a_request_can_name_its_model(fake_api: Running) -> None:
    reply = call(fake_api.port, "POST", "/api/generate", body={"prompt": "x", "model": "Beta", **SMALL})
    assert reply.json["metadata"]["model"] == "Beta"
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img",
                 body={"prompt": "x", "override_settings": {"sd_model_checkpoint": "Beta"}, **SMALL})
    assert json.loads(reply.json["info"])["sd_model_name"] == "Beta"
    assert call(fake_api.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"] == "Alpha"  # per request only


# -- progress, interrupt and the queue --------------------------------------------------------------
def _submit_in_background(api: Running, path: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    pool = ThreadPoolExecutor(1)
    return pool, pool.submit(call, api.port, "POST", path, body=body)


def test_progress_reports_the_running_job_with_a_preview(gated_api: Running, gate) -> None:  # type: ignore[no-untyped-def]
    idle = call(gated_api.port, "GET", "/sdapi/v1/progress").json
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    pool, future = _submit_in_background(gated_api, "/sdapi/v1/txt2img", {"prompt": "x", "steps": 4, "width": 64, "height": 64})
    assert gate.reached.wait(30)
    busy = call(gated_api.port, "GET", "/sdapi/v1/progress").json
    assert busy["progress"] == 0.25 and busy["state"]["sampling_step"] == 1 and busy["state"]["sampling_steps"] == 4
    assert busy["state"]["job_count"] == 1 and busy["textinfo"].startswith("Image 1/1")
    assert decode_png(busy["current_image"]).size == (8, 8)
    assert call(gated_api.port, "GET", "/sdapi/v1/progress?skip_current_image=true").json["current_image"] is None
    status = call(gated_api.port, "GET", "/api/status").json
    assert status["isGenerating"] is True and status["modelStatus"] == "loaded"
    gate.release.set()
    assert future.result(30).status == 200
    pool.shutdown()


def test_interrupt_cancels_the_running_job(gated_api: Running, gate) -> None:  # type: ignore[no-untyped-def]
    pool, a1111 = _submit_in_background(gated_api, "/sdapi/v1/txt2img", {"prompt": "x", **SMALL})
    assert gate.reached.wait(30)
    assert call(gated_api.port, "POST", "/sdapi/v1/interrupt", body={}).json == {}
    gate.release.set()
    reply = a1111.result(30)
    assert reply.status == 200 and reply.json["images"] == [] and json.loads(reply.json["info"])["interrupted"] is True
    assert gated_api.store == []  # nothing saved
    gate.reached.clear()
    gate.release.clear()
    _, heyim = _submit_in_background(gated_api, "/api/generate", {"prompt": "x", **SMALL})
    assert gate.reached.wait(30)
    call(gated_api.port, "POST", "/sdapi/v1/interrupt", body={})
    gate.release.set()
    reply = heyim.result(30)
    assert reply.status == 409 and reply.json["success"] is False
    pool.shutdown()


def test_concurrent_requests_queue_and_never_overlap(gated_api: Running, gate) -> None:  # type: ignore[no-untyped-def]
    running: set[int] = set()
    overlap = threading.Event()
    lock = threading.Lock()

    def watch(job: Job) -> None:  # called on every state change and progress report
        with lock:
            if job.state is JobState.RUNNING:
                running.add(job.id)
                if len(running) > 1:
                    overlap.set()
            elif job.state.finished:
                running.discard(job.id)

    gated_api.queue.add_listener(watch)
    queued = threading.Event()
    gated_api.queue.add_listener(lambda job: len(gated_api.queue.pending()) == 3 and queued.set())
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, gated_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": f"p{i}", "seed": i, **SMALL})
                   for i in range(4)]
        assert gate.reached.wait(30) and queued.wait(30)
        status = call(gated_api.port, "GET", "/api/status").json
        assert status["isGenerating"] is True and status["queueSize"] == 3
        gate.release.set()
        replies = [f.result(30) for f in futures]
    assert all(r.status == 200 for r in replies)
    assert sorted(json.loads(r.json["info"])["seed"] for r in replies) == [0, 1, 2, 3]
    assert not overlap.is_set() and len(gated_api.store) == 4


def test_a_client_that_hangs_up_cancels_its_job(gated_api: Running, gate) -> None:  # type: ignore[no-untyped-def]
    import http.client

    finished = threading.Event()
    gated_api.queue.add_listener(lambda job: job.state.finished and finished.set())
    conn = http.client.HTTPConnection("127.0.0.1", gated_api.port, timeout=30)
    body = json.dumps({"prompt": "x", **SMALL})
    conn.request("POST", "/sdapi/v1/txt2img", body=body, headers={
        "Host": f"127.0.0.1:{gated_api.port}", "Authorization": "Bearer test-token-123", "Content-Type": "application/json"})
    assert gate.reached.wait(30)
    conn.close()  # the client gives up while its job runs
    job = gated_api.queue.running
    assert job is not None
    assert job.cancel._event.wait(30)  # the server noticed and cancelled it
    gate.release.set()
    assert finished.wait(30) and job.state is JobState.CANCELLED


def test_the_default_model_can_follow_the_apps_selection() -> None:
    selected = ["beta"]
    running, worker = start_fake(default_model=lambda: selected[0])
    try:
        assert call(running.port, "GET", "/api/status").json["defaultModel"] == "Beta"
        reply = call(running.port, "POST", "/api/generate", body={"prompt": "x", **SMALL})
        assert reply.json["metadata"]["model"] == "Beta"
        selected[0] = "alpha"
        assert call(running.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"] == "Alpha"
    finally:
        running.server.stop()
        worker.stop(timeout=10)


def test_a_bug_is_answered_as_json_500() -> None:
    def broken() -> list[object]:
        raise RuntimeError("catalog exploded")

    running, worker = start_fake(models=broken)
    try:
        reply = call(running.port, "GET", "/sdapi/v1/sd-models")
        assert reply.status == 500 and "catalog exploded" in reply.json["error"]
    finally:
        running.server.stop()
        worker.stop(timeout=10)


def test_a_model_that_cannot_load_is_a_503(fake_api: Running) -> None:
    fake_api.server.context.default_model = "gamma"  # not loadable by the fake loader
    reply = call(fake_api.port, "POST", "/api/generate", body={"prompt": "x", **SMALL})
    assert reply.status == 503 and "gamma" in reply.json["error"]


def test_stopping_the_server_cancels_its_waiting_jobs_and_nothing_else(gate) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.request import GenerationRequest

    running, worker = start_fake(gate)
    try:
        pool, api_job = _submit_in_background(running, "/api/generate", {"prompt": "from the api", **SMALL})
        assert gate.reached.wait(30)
        app_job = running.queue.submit(GenerationRequest(prompt="from the window", **SMALL), source="app")
        running.server.stop()
        reply = api_job.result(30)
        assert reply.status == 503 and "stopping" in reply.json["error"]
        gate.release.set()
        assert app_job.wait(30) and app_job.state is JobState.DONE  # the app's own queue goes on
        pool.shutdown()
    finally:
        gate.release.set()
        running.server.stop()
        worker.stop(timeout=10)
