"""Precision choices: bf16 on the CPU (half the memory), the families' defaults, clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.devices import PRECISIONS
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.request import GenerationRequest


def test_dtype_choice_per_device_and_precision() -> None:
    import torch

    from heyim_desktop.core.families.engine import family_dtype
    from heyim_desktop.core.torch_engine import pick_dtype

    cpu = torch.device("cpu")
    assert PRECISIONS == ("auto", "fp16", "bf16", "fp32")
    assert pick_dtype(cpu) is torch.float32 and family_dtype(cpu) is torch.float32
    assert pick_dtype(cpu, "bf16") is torch.bfloat16 and family_dtype(cpu, "bf16") is torch.bfloat16
    assert pick_dtype(cpu, "fp32") is torch.float32
    for pick in (pick_dtype, family_dtype):
        with pytest.raises(ModelError, match="fp16 is not supported on the CPU; use bf16"):
            pick(cpu, "fp16")
        with pytest.raises(ModelError, match="Unknown precision 'int8'"):
            pick(cpu, "int8")


def test_bf16_on_a_gpu_without_it_is_refused_in_plain_words(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from heyim_desktop.core.families.engine import family_dtype
    from heyim_desktop.core.torch_engine import pick_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    with pytest.raises(ModelError, match="This GPU has no bf16 support"):
        pick_dtype(cuda, "bf16")
    assert family_dtype(cuda) is torch.float16  # automatic falls back instead of failing


def test_a_family_model_in_bf16_on_the_cpu_equals_the_diffusers_pipeline_in_bf16(tiny_zimage: Path) -> None:
    import torch
    from diffusers import ZImagePipeline

    from heyim_desktop.core.loading import load_engine

    request = GenerationRequest("a red fox in the forest", steps=2, guidance=3.0, seed=5, width=64, height=64)
    engine: Any = load_engine(str(tiny_zimage), device="cpu", precision="bf16")
    try:
        assert engine.pipe.transformer.dtype is torch.bfloat16
        out = engine.render(request)
    finally:
        engine.close()
    pipe = ZImagePipeline.from_pretrained(tiny_zimage, local_files_only=True, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(request.prompt, height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    assert float(np.abs(out.images[0] - np.asarray(ref[0], dtype=np.float32)).max()) <= 1e-4


def test_a_stable_diffusion_model_runs_in_bf16_on_the_cpu_close_to_fp32() -> None:
    import torch

    from heyim_desktop.core.loading import DEMO_REF, load_engine

    request = GenerationRequest("a lighthouse at dusk", steps=3, guidance=5.0, seed=3, width=64, height=64)
    images = {}
    for precision in ("fp32", "bf16"):
        engine: Any = load_engine(DEMO_REF, device="cpu", precision=precision)
        try:
            unet = engine.components.unet_model
            assert unet.dtype is (torch.bfloat16 if precision == "bf16" else torch.float32)
            result = engine.generate(request)
        finally:
            engine.close()
        images[precision] = np.asarray(result.images[0].image.convert("RGB"), dtype=np.float32)
    assert images["bf16"].shape == images["fp32"].shape == (64, 64, 3)
    # bf16 keeps 8 bits of mantissa: the same picture, not the same bits.
    assert float(np.abs(images["bf16"] - images["fp32"]).mean()) < 3.0


@pytest.mark.macos
def test_on_apple_silicon_the_families_take_bf16_on_mps_where_macos_has_it(tiny_zimage: Path) -> None:
    """A real MPS check (macOS only): bf16 where the probe succeeds (macOS 14+), fp32 otherwise, and a
    family model generates in the dtype chosen."""
    import platform

    import torch

    from heyim_desktop.core.families.engine import family_dtype
    from heyim_desktop.core.loading import load_engine

    if not torch.backends.mps.is_available():
        pytest.skip("this Mac's PyTorch has no MPS")
    major = int(platform.mac_ver()[0].split(".")[0] or 0)
    mps = torch.device("mps")
    expected = torch.bfloat16 if major >= 14 else torch.float32
    assert family_dtype(mps) is expected
    engine: Any = load_engine(str(tiny_zimage), device="mps")
    try:
        assert engine.pipe.transformer.dtype is expected
        out = engine.render(GenerationRequest("a red fox", steps=2, guidance=3.0, seed=1, width=64, height=64))
        assert np.isfinite(out.images).all() and out.images.shape == (1, 64, 64, 3)
    finally:
        engine.close()


def test_a_gpu_that_only_emulates_bf16_gets_fp16_automatically_and_bf16_when_asked(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from heyim_desktop.core.families.engine import family_dtype
    from heyim_desktop.core.torch_engine import pick_dtype

    # Before Ampere: torch says bf16 works (emulated) but not natively.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    cuda = torch.device("cuda")
    with caplog.at_level("WARNING"):
        assert family_dtype(cuda) is torch.float16
    assert "no native bf16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert family_dtype(cuda, "bf16") is torch.bfloat16 and pick_dtype(cuda, "bf16") is torch.bfloat16
    assert "only emulates bf16" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert family_dtype(cuda) is torch.bfloat16  # Ampere and later
