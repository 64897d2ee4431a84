"""Generation core v2's contracts: capabilities, engine info, guidance and extension hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heyim_desktop.core.capabilities import Capabilities, Recommended
from heyim_desktop.core.conditioning import TextCond, UNetCall
from heyim_desktop.core.engine import EngineInfo
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.extensions import BaseExtension, LoopState
from heyim_desktop.core.guidance import ClassifierFree, NoGuidance, build_guidance
from heyim_desktop.core.loop import check_request, run_loop
from heyim_desktop.core.request import GenerationRequest


def test_capabilities_and_engine_info_round_trip_as_plain_data() -> None:
    caps = Capabilities(
        family="sdxl", max_prompt_chunks=3, fixed_size=(768, 512), default_size=(1024, 1024),
        schedulers=("Euler",), recommended=Recommended(steps=4, guidance=0.0, scheduler="Euler a", source="known model"),
    )
    info = EngineInfo("torch-cpu", "m", (1024, 1024), caps, "0123456789")
    import json

    back = EngineInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert back == info
    assert back.fixed_size == (768, 512) and back.capabilities.chunked_prompts


def test_from_dict_ignores_unknown_keys() -> None:
    assert Capabilities.from_dict({"family": "sd2", "from_the_future": 1}).family == "sd2"


def test_tiny_engine_reports_its_capabilities(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    info = tiny_engine.info
    assert info.capabilities.family == "sd1"
    assert info.capabilities.guidance == "cfg" and info.capabilities.img2img
    assert info.default_size == info.capabilities.default_size
    count = tiny_engine.count_tokens("a red fox")
    assert count.tokens == 3 and count.limit == 75 and count.exact


def test_fixed_size_and_img2img_limits_come_from_capabilities() -> None:
    caps = Capabilities(fixed_size=(256, 256), img2img=False)
    with pytest.raises(InvalidRequest, match="only makes 256x256"):
        check_request(caps, GenerationRequest(prompt="x", width=512, height=512))
    from PIL import Image

    with pytest.raises(InvalidRequest, match="image-to-image"):
        check_request(caps, GenerationRequest(prompt="x", width=256, height=256, init_image=Image.new("RGB", (8, 8))))


def test_classifier_free_guidance_batches_and_combines() -> None:
    cond = TextCond(torch.ones(1, 4, 3), torch.ones(1, 2), {"time_ids": torch.ones(1, 6)})
    uncond = TextCond(torch.zeros(1, 4, 3), torch.zeros(1, 2), {"time_ids": torch.zeros(1, 6)})
    g = build_guidance("cfg", scale=3.0, cond=cond, uncond=uncond, n=2)
    assert isinstance(g, ClassifierFree)
    assert g.text.hidden.shape == (4, 4, 3) and g.text.pooled is not None and g.text.pooled.shape == (4, 2)
    assert g.text.extras["time_ids"][:2].sum() == 0 and g.text.extras["time_ids"][2:].sum() == 12
    assert g.batch(torch.ones(2, 1)).shape == (4, 1)
    pred = torch.tensor([[1.0], [1.0], [2.0], [2.0]])
    assert torch.equal(g.combine(pred), torch.tensor([[4.0], [4.0]]))
    none = build_guidance("cfg", scale=3.0, cond=cond, uncond=None, n=2)
    assert isinstance(none, NoGuidance) and none.text.batch == 2


def test_embedded_guidance_passes_the_scale_as_timestep_cond() -> None:
    cond = TextCond(torch.ones(1, 4, 3))
    g = build_guidance("embedded", scale=8.0, cond=cond, uncond=None, n=3, embedding_dim=16, dtype=torch.float32)
    assert g.timestep_cond is not None and g.timestep_cond.shape == (3, 16)


class _Recorder(BaseExtension):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_loop(self, state: LoopState) -> None:
        self.calls.append("before_loop")

    def before_unet(self, state: LoopState, call: UNetCall) -> None:
        self.calls.append(f"unet{state.step_index}")

    def after_step(self, state: LoopState) -> None:
        self.calls.append("step")

    def after_loop(self, state: LoopState) -> None:
        self.calls.append("after_loop")


def test_extension_hooks_run_around_every_step_and_leave_the_image_alone(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt="a fox", steps=3, seed=5, width=64, height=64)
    plain = run_loop(tiny_engine.components, req).images
    rec = _Recorder()
    hooked = run_loop(tiny_engine.components, req, extensions=[rec]).images
    assert np.array_equal(plain, hooked)
    assert rec.calls == ["before_loop", "unet0", "step", "unet1", "step", "unet2", "step", "after_loop"]




def test_extension_can_change_the_latents_after_a_step(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    class Freeze(BaseExtension):
        def after_step(self, state: LoopState) -> None:
            state.latents = torch.zeros_like(state.latents)

    req = GenerationRequest(prompt="a fox", steps=2, seed=5, width=64, height=64)
    frozen = run_loop(tiny_engine.components, req, extensions=[Freeze()]).images
    decoded_zero = run_loop(tiny_engine.components, req).images
    assert not np.array_equal(frozen, decoded_zero)
    # All-zero latents decode to the same image whatever the seed.
    other = run_loop(tiny_engine.components, req.replace(seed=6), extensions=[Freeze()]).images
    assert np.array_equal(frozen, other)


def test_loaded_models_carry_automatic1111s_hash_into_the_metadata(data_dir, tiny_model, tiny_single_file) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.metadata import format_parameters, parse_parameters

    single = load_engine(str(tiny_single_file), device="cpu")
    try:
        want = hashlib.sha256(tiny_single_file.read_bytes()).hexdigest()[:10]
        assert single.info.model_hash == want
        result = single.generate(GenerationRequest(prompt="a fox", steps=1, seed=1, width=64, height=64))
        assert result.model_hash == want
        text = format_parameters(result.request, 1, result.model_name, model_hash=result.model_hash)
        assert parse_parameters(text).params["Model hash"] == want
    finally:
        single.close()
    folder = load_engine(str(tiny_model), device="cpu")
    try:
        assert folder.info.model_hash is not None and len(folder.info.model_hash) == 10
    finally:
        folder.close()
