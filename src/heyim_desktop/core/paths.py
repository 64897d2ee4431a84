"""Where HeyIm keeps things on this machine (platformdirs), with overrides for tests."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "HeyIm"
APP_AUTHOR = "HeyIm"
#: Set to a folder to keep all of HeyIm's data (history, models, settings) there: tests, portable use.
DATA_DIR_ENV = "HEYIM_DATA_DIR"


def data_dir() -> Path:
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def cache_dir() -> Path:
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, APP_AUTHOR))


def log_dir() -> Path:
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser() / "logs"
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, APP_AUTHOR))


def demo_model_dir() -> Path:
    return cache_dir() / "demo-model"


def ensure_demo_sdxl_model(*, refiner: bool = False) -> Path:
    """The tiny random SDXL (or its refiner), built into the cache on first use (tests, checks)."""
    folder = cache_dir() / ("demo-sdxl-refiner" if refiner else "demo-sdxl")
    if (folder / "model_index.json").is_file():
        return folder
    from heyim_desktop.core.demo_model import build_demo_sdxl_model

    return build_demo_sdxl_model(folder, refiner=refiner, overwrite=True)


def ensure_demo_model() -> Path:
    """The tiny random model, built into the cache on first use."""
    folder = demo_model_dir()
    if (folder / "model_index.json").is_file():
        return folder
    from heyim_desktop.core.demo_model import build_demo_model

    return build_demo_model(folder, overwrite=True)
