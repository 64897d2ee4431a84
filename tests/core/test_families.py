"""The diffusion-transformer families: our engine against diffusers' own pipeline on tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.families import ZIMAGE, check_family_folder, family_for_pipeline, read_family_index
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(prompt="a red fox in the forest", steps=3, guidance=3.0, seed=7, width=64, height=64)
    base.update(kw)
    return GenerationRequest(**base)


def _reference(folder: Path, request: GenerationRequest, seed: int) -> np.ndarray:
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        request.prompt, negative_prompt=request.negative_prompt or None, height=request.height, width=request.width,
        num_inference_steps=request.steps, guidance_scale=request.guidance,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    ).images
    return np.asarray(out[0], dtype=np.float32)


@pytest.mark.parametrize("guidance,negative", [(3.0, "blurry, ugly"), (0.0, "")])
def test_zimage_equals_the_diffusers_pipeline(zimage_engine: Any, tiny_zimage: Path, guidance: float, negative: str) -> None:
    request = _req(guidance=guidance, negative_prompt=negative, count=2)
    out = zimage_engine.render(request)
    assert out.images.shape == (2, 64, 64, 3) and out.seeds == (7, 8)
    for i, seed in enumerate(out.seeds):
        ref = _reference(tiny_zimage, request, seed)
        assert float(np.abs(out.images[i] - ref).max()) <= 1e-4
    assert float(np.abs(out.images[0] - out.images[1]).max()) > 1e-2  # seed + i gives another image


def test_zimage_generates_with_progress_previews_and_timings(zimage_engine: Any) -> None:
    seen: list[Progress] = []
    result = zimage_engine.generate(_req(steps=3), progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and all(p.total == 3 for p in seen)
    preview = seen[0].preview
    assert preview is not None and preview.dtype == np.uint8 and preview.shape[2] == 3
    assert result.images[0].image.size == (64, 64) and result.images[0].seed == 7
    assert {"steps", "decode", "total"} <= set(result.timings)
    # The SD scheduler the request defaulted to does not apply: the family's sampler is recorded.
    assert result.request.scheduler == "Euler" and any("flow-matching" in w for w in result.warnings)
    assert zimage_engine.info.capabilities.family == "zimage"
    assert zimage_engine.info.capabilities.schedulers == ("Euler",)


def test_zimage_progress_counts_the_steps_of_the_whole_job(zimage_engine: Any) -> None:
    seen: list[Progress] = []
    zimage_engine.generate(_req(steps=2, count=2), progress=seen.append)
    # As core.loop counts them (the window and the Redis queue show them as they are).
    assert [(p.step, p.total, p.image_index) for p in seen] == [(1, 4, 0), (2, 4, 0), (3, 4, 1), (4, 4, 1)]
    assert seen[-1].fraction == 1.0


def test_zimage_cancel_within_a_step_saves_nothing(tiny_zimage: Path) -> None:
    from heyim_desktop.core.host import EngineHost
    from heyim_desktop.core.jobs import JobQueue, JobState
    from heyim_desktop.core.loading import load_engine

    q = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(tiny_zimage))
    job = q.submit(_req(steps=20))
    q.add_listener(lambda j: j.progress is not None and j.progress.step == 2 and j.cancel.cancel())
    assert q.take(timeout=1) is job
    host.run_job(q, job, sink=lambda r, j: pytest.fail("a cancelled job must not be saved"))  # type: ignore[arg-type,return-value]
    assert job.state is JobState.CANCELLED and job.result is None
    assert job.progress is not None and job.progress.step == 2
    host.unload()


def test_zimage_interrupt_keeps_the_partial_image(zimage_engine: Any) -> None:
    token = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.step == 1:
            token.interrupt()

    result = zimage_engine.generate(_req(steps=10, count=3), progress=on_progress, cancel=token)
    assert result.interrupted and len(result.images) == 1


def test_zimage_refuses_what_it_cannot_do(zimage_engine: Any) -> None:
    from PIL import Image

    with pytest.raises(InvalidRequest, match="text-to-image only"):
        zimage_engine.generate(_req(init_image=Image.new("RGB", (64, 64))))


def test_family_table_and_folder_checks(tiny_zimage: Path, tmp_path: Path) -> None:
    assert family_for_pipeline("ZImagePipeline") is ZIMAGE
    assert family_for_pipeline("StableDiffusionPipeline") is None
    found = read_family_index(tiny_zimage)
    assert found is not None and found[0] is ZIMAGE
    assert check_family_folder(tiny_zimage, found[1]) is ZIMAGE
    broken = tmp_path / "broken"
    shutil.copytree(tiny_zimage, broken)
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    (broken / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelError, match="pickle"):
        check_family_folder(broken, json.loads((broken / "model_index.json").read_text()))
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match="missing vae/"):
        check_family_folder(broken, json.loads((broken / "model_index.json").read_text()))


def test_flux2_klein_equals_the_diffusers_pipeline(tiny_flux2: Path) -> None:
    import torch
    from diffusers import Flux2KleinPipeline

    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(tiny_flux2), device="cpu")
    caps = engine.info.capabilities
    assert caps.family == "flux2" and caps.negative_prompt is False and caps.guidance == "cfg"
    request = _req(guidance=4.0, steps=2, negative_prompt="ugly")
    seen: list[Progress] = []
    out = engine.render(request, progress=seen.append)
    assert [p.step for p in seen] == [1, 2] and seen[0].preview is not None
    assert any("no negative prompt" in w for w in out.warnings)
    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=request.prompt, height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np", text_encoder_out_layers=(1,)).images
    assert float(np.abs(out.images[0] - ref[0]).max()) <= 1e-4
    engine.close()


def test_sd3_equals_the_diffusers_pipeline(tiny_sd3: Path) -> None:
    import torch
    from diffusers import StableDiffusion3Pipeline

    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(tiny_sd3), device="cpu")
    assert engine.info.capabilities.family == "sd3" and engine.info.capabilities.negative_prompt
    request = _req(guidance=5.0, steps=2, negative_prompt="blurry", count=2)
    out = engine.render(request)
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3, local_files_only=True, text_encoder_3=None,
                                                    tokenizer_3=None, feature_extractor=None, image_encoder=None)
    pipe.set_progress_bar_config(disable=True)
    for i, seed in enumerate(out.seeds):
        ref = pipe(prompt=request.prompt, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                   guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        assert float(np.abs(out.images[i] - ref[0]).max()) <= 1e-4
    engine.close()


def test_zimage_runs_in_the_engine_process(tiny_zimage: Path, zimage_engine: Any) -> None:
    """The GUI and serve talk to a child process: the family engine's info, progress and images cross it."""
    from heyim_desktop.core.process.remote import ProcessLoader

    remote = ProcessLoader(device="cpu")(str(tiny_zimage))
    try:
        caps = remote.info.capabilities
        assert caps.family == "zimage" and caps.guidance_range == (0.0, 10.0) and caps.schedulers == ("Euler",)
        seen: list[Progress] = []
        result = remote.generate(_req(steps=2, model=str(tiny_zimage)), progress=seen.append)
        assert [p.step for p in seen] == [1, 2] and result.images[0].image.size == (64, 64)
        local = zimage_engine.generate(_req(steps=2))
        assert np.array_equal(np.asarray(result.images[0].image), np.asarray(local.images[0].image))
    finally:
        remote.close()
