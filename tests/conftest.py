"""Shared fixtures: a tiny random model built once per session, isolated data folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Never the user's own HeyIm folder: a test that forgets the data_dir fixture writes to a
# throwaway folder of this test run (each pytest-xdist worker gets its own).
os.environ.setdefault("HEYIM_DATA_DIR", tempfile.mkdtemp(prefix="heyim-test-data-"))


def pytest_configure(config: pytest.Config) -> None:
    import sys

    if sys.platform != "darwin":
        config.addinivalue_line("markers", "macos: needs macOS")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``./test.sh`` (pytest-xdist, ``--dist loadfile``): a file's tests stay on one worker (its
    module fixtures are built once), and all Core ML tests share one worker too: they use the
    session's converted tiny models, and converting those once per worker cost minutes."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesWithCoreMLTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/core/coreml/" if path.startswith("tests/core/coreml/") else path

    return FilesWithCoreMLTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import sys

    if sys.platform == "darwin":
        return
    skip = pytest.mark.skip(reason="needs macOS (real Core ML prediction)")
    for item in items:
        if "macos" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    # On a 2-core machine, torch's default thread pool thrashes when the other core is busy.
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random SD model in diffusers format, on disk (built once)."""
    from heyim_desktop.core.demo_model import build_demo_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    return build_demo_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(tiny_model, device="cpu")
    yield engine
    engine.close()


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> Path:
    """A private HEYIM_DATA_DIR whose cache already holds the demo model."""
    from heyim_desktop.core.paths import DATA_DIR_ENV

    root = tmp_path / "heyim-data"
    (root / "cache").mkdir(parents=True)
    shutil.copytree(tiny_model, root / "cache" / "demo-model")
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    return root


@pytest.fixture(scope="session")
def tiny_single_file(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an original-layout (A1111) single-file ``.safetensors`` checkpoint."""
    from ldm_layout import write_single_file

    return write_single_file(tiny_model, tmp_path_factory.mktemp("single") / "tiny-a1111.safetensors")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL base in diffusers format (two CLIP encoders, text_time UNet), built once."""
    from heyim_desktop.core.demo_model import build_demo_sdxl_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    return build_demo_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_refiner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL's refiner (second encoder only, aesthetic-score time ids), built once."""
    from heyim_desktop.core.demo_model import build_demo_sdxl_model

    return build_demo_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl-refiner", refiner=True)


@pytest.fixture(scope="session")
def tiny_sdxl_engine(tiny_sdxl: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(tiny_sdxl, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_sdxl_single_file(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL as an original-layout (A1111) single-file ``.safetensors`` checkpoint."""
    from ldm_layout import write_sdxl_single_file

    return write_sdxl_single_file(tiny_sdxl, tmp_path_factory.mktemp("single") / "tiny-sdxl-a1111.safetensors")


@pytest.fixture(scope="session")
def tiny_inpaint_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 9-channel (inpainting) UNet of random weights."""
    import torch
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("inpaint") / "tiny-inpaint"
    shutil.copytree(tiny_model, folder)
    config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    config["in_channels"] = 9
    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_config(config)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Z-Image model (diffusers' fast-test shapes) in diffusers format, on disk."""
    from heyim_desktop.core.families.tiny import build_tiny_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    return build_tiny_model("zimage", tmp_path_factory.mktemp("models") / "tiny-zimage")


@pytest.fixture(scope="session")
def zimage_engine(tiny_zimage: Path):  # type: ignore[no-untyped-def]
    from heyim_desktop.core.loading import load_engine

    engine = load_engine(str(tiny_zimage), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_flux2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random FLUX.2 [klein] model (diffusers' fast-test shapes) in diffusers format."""
    from heyim_desktop.core.families.tiny import build_tiny_model

    return build_tiny_model("flux2", tmp_path_factory.mktemp("models") / "tiny-flux2")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD 3.5 model (two CLIP encoders; no T5: text_encoder_3 is None)."""
    from heyim_desktop.core.families.tiny import build_tiny_model

    return build_tiny_model("sd3", tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ControlNet built from the tiny model's UNet, every weight random (diffusers folder)."""
    from controlnet_layout import build_tiny_controlnet

    return build_tiny_controlnet(tiny_model, tmp_path_factory.mktemp("controlnet") / "tiny-controlnet", seed=5)


@pytest.fixture(scope="session")
def tiny_controlnet_b(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second random tiny ControlNet, for two-unit requests."""
    from controlnet_layout import build_tiny_controlnet

    return build_tiny_controlnet(tiny_model, tmp_path_factory.mktemp("controlnet") / "tiny-controlnet-b", seed=6)


@pytest.fixture(scope="session")
def adapter_sd(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD with a UNet that starts with cross-attention blocks, as SD 1.x/2.x UNets do,
    so an SD T2I-Adapter's features fit it (the tiny model's own UNet is laid out like SDXL's)."""
    from adapter_layout import build_adapter_sd

    return build_adapter_sd(tiny_model, tmp_path_factory.mktemp("adapter-sd") / "tiny-sd-adapterable")


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny SD T2I-Adapter (full_adapter, channels 32/64) in a diffusers folder."""
    from adapter_layout import build_tiny_adapter

    return build_tiny_adapter(tmp_path_factory.mktemp("adapter") / "tiny-adapter", seed=1)


@pytest.fixture(scope="session")
def tiny_lama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random full-size LaMa (spandrel's big-LaMa) as ``.../annotator/big-lama.safetensors``."""
    from lama_layout import write_tiny_lama

    root = tmp_path_factory.mktemp("lama")
    return write_tiny_lama(root / "models" / "ControlNet" / "annotator" / "big-lama.safetensors", root)
