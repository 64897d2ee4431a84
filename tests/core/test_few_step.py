"""Few-step models: LCM's guidance embedding, trailing timesteps (Turbo, Lightning), recommended settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from heyim_desktop.core.capabilities import Recommended
from heyim_desktop.core.loop import run_loop
from heyim_desktop.core.recommended import describe, recommended_for
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.schedulers import SCHEDULER_NAMES, build_scheduler

TOL = 1e-4


def _write_scheduler(folder: Path, config: dict) -> None:  # type: ignore[type-arg]
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config), encoding="utf-8")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["scheduler"] = ["diffusers", config["_class_name"]]
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")


@pytest.fixture(scope="module")
def lcm_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with an LCM-distilled UNet: a guidance embedding (``time_cond_proj_dim``)."""
    from diffusers import LCMScheduler, UNet2DConditionModel

    folder = tmp_path_factory.mktemp("lcm") / "tiny-lcm"
    shutil.copytree(tiny_model, folder)
    config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    config["time_cond_proj_dim"] = 8
    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_config(config)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    base = json.loads((tiny_model / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    lcm = dict(LCMScheduler.from_config(base).config)
    lcm["_class_name"] = "LCMScheduler"
    _write_scheduler(folder, lcm)
    return folder


def test_lcm_unet_matches_diffusers_latent_consistency_pipeline(lcm_model: Path) -> None:
    from diffusers import LatentConsistencyModelPipeline

    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(lcm_model, device="cpu")
    try:
        caps = engine.info.capabilities
        assert caps.guidance == "embedded"
        assert caps.recommended.scheduler == "LCM" and caps.recommended.steps == 4
        pipe = LatentConsistencyModelPipeline.from_pretrained(
            lcm_model, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        for guidance, steps in ((8.0, 4), (1.5, 2)):
            req = GenerationRequest(prompt="a red fox", steps=steps, guidance=guidance, seed=11, width=64,
                                    height=64, scheduler="LCM")
            ours = run_loop(engine.components, req).images
            ref = pipe("a red fox", num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(11), output_type="np").images
            assert ours.shape == ref.shape == (1, 64, 64, 3)
            assert np.abs(ours - ref).max() <= TOL, (guidance, steps)
        # The embedding carries the guidance: another scale is another image.
        a = run_loop(engine.components, req).images
        b = run_loop(engine.components, req.replace(guidance=6.0)).images
        assert np.abs(a - b).max() > 1e-3
    finally:
        engine.close()


TRAILING = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "steps_offset": 1, "timestep_spacing": "trailing", "interpolation_type": "linear",
}


# LCM places its timesteps on its own 50-step skeleton ("original_inference_steps") instead.
@pytest.mark.parametrize("name", [n for n in SCHEDULER_NAMES if n != "LCM"])
def test_trailing_timestep_spacing_reaches_every_scheduler(name: str) -> None:
    scheduler = build_scheduler(name, TRAILING)
    scheduler.set_timesteps(1)
    assert int(scheduler.timesteps[0]) == 999, name  # "leading" would start at 1


@pytest.fixture(scope="module")
def turbo_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model shipped the way SD-Turbo is: Euler with trailing timesteps, named as such."""
    folder = tmp_path_factory.mktemp("turbo") / "sd-turbo"
    shutil.copytree(tiny_model, folder)
    _write_scheduler(folder, TRAILING)
    return folder


@pytest.mark.parametrize(("scheduler", "steps"), [("Euler a", 1), ("Euler", 4), ("DDIM", 2)])
def test_turbo_style_model_matches_diffusers_without_guidance(turbo_model: Path, scheduler: str, steps: int) -> None:
    from diffusers import StableDiffusionPipeline

    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(turbo_model, device="cpu")
    try:
        rec = engine.info.capabilities.recommended
        assert (rec.steps, rec.guidance, rec.scheduler) == (1, 0.0, "Euler a") and "known model" in rec.source
        req = GenerationRequest(prompt="a red fox", steps=steps, guidance=0.0, seed=5, width=64, height=64,
                                scheduler=scheduler)
        ours = run_loop(engine.components, req).images
        pipe = StableDiffusionPipeline.from_pretrained(
            turbo_model, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = build_scheduler(scheduler, engine.components.scheduler_config)
        assert pipe.scheduler.config.timestep_spacing == "trailing"
        ref = pipe("a red fox", num_inference_steps=steps, guidance_scale=0.0, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
        assert np.abs(ours - ref).max() <= TOL
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("name", "steps", "guidance", "scheduler"),
    [
        ("sdxl-turbo", 1, 0.0, "Euler a"),
        ("sd-turbo", 1, 0.0, "Euler a"),
        ("sd_xl_turbo_1.0_fp16", 1, 0.0, "Euler a"),
        ("sdxl_lightning_4step", 4, 0.0, "Euler"),
        ("sdxl_lightning_8step_unet", 8, 0.0, "Euler"),
        ("Hyper-SDXL-8steps", 8, 0.0, "DDIM"),
        ("Hyper-SD15-8steps-CFG", 8, 5.0, "DDIM"),
        ("dreamshaper-lcm", 4, 1.5, "LCM"),
    ],
)
def test_known_few_step_models_by_name(name: str, steps: int, guidance: float, scheduler: str) -> None:
    rec = recommended_for(name)
    assert (rec.steps, rec.guidance, rec.scheduler) == (steps, guidance, scheduler)


def test_recommendations_from_the_models_own_config() -> None:
    assert recommended_for("anything", guidance_embedding=True).guidance == 8.0
    rec = recommended_for("my-merge", scheduler_config={"_class_name": "LCMScheduler"})
    assert rec.scheduler == "LCM" and "model config" in rec.source
    assert recommended_for("stable-diffusion-v1-5", scheduler_config={"_class_name": "PNDMScheduler"}) == Recommended()
    assert describe(Recommended(steps=1, guidance=0.0, scheduler="Euler a")) == "1 step, guidance 0, Euler a"
