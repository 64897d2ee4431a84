"""Fixtures for the Redis job queue: a real redis-server on 127.0.0.1 and worker processes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from queue_helpers import Farm, RedisServer, launch_redis, stop_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = launch_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis(server)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("farm")
    data = root / "heyim-data"
    (data / "cache").mkdir(parents=True)
    shutil.copytree(tiny_model, data / "cache" / "demo-model")  # `--demo` finds it: no build per worker
    f = Farm(data_dir=data, folder=root)
    yield f
    f.stop_all()
