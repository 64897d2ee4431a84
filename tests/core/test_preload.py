"""Background preload of the last-used model."""

from __future__ import annotations

import threading
import pytest

from heyim_desktop.core.host import EngineHost
from heyim_desktop.core.preload import Preloader


class FakeEngine:
    name = "fake"

    def __init__(self, ref: str) -> None:
        self.model_name = ref
        self.closed = False

    def close(self) -> None:
        self.closed = True


class GatedLoader:
    """A loader that blocks until the test lets it finish."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[str] = []
        self.made: list[FakeEngine] = []

    def __call__(self, ref: str) -> FakeEngine:
        self.calls.append(ref)
        self.started.set()
        if ref == "slow":
            assert self.gate.wait(10)
        if ref == "broken":
            raise OSError("disk gone")
        engine = FakeEngine(ref)
        self.made.append(engine)
        return engine


def test_host_takes_the_preloaded_engine() -> None:
    loader = GatedLoader()
    pre = Preloader(loader)
    pre.start("slow")
    assert loader.started.wait(10)
    assert pre.loading and pre.elapsed() >= 0.0
    host = EngineHost(pre.wrap())
    threading.Timer(0.0, loader.gate.set).start()  # finishes while the host waits
    engine = host.ensure_model("slow")
    assert engine is loader.made[0] and loader.calls == ["slow"]  # loaded once, not twice
    assert not pre.loading


def test_another_model_is_loaded_and_the_preload_closed() -> None:
    loader = GatedLoader()
    pre = Preloader(loader)
    pre.start("slow")
    assert loader.started.wait(10)
    host = EngineHost(pre.wrap())
    engine = host.ensure_model("other")
    assert engine.model_name == "other"
    loader.gate.set()
    preloaded = loader.made  # closed when its load ends, so two models never stay in memory
    pre._done.wait(10)
    for thread in threading.enumerate():
        if thread.name == "heyim-preload-discard":
            thread.join(10)
    assert [e.model_name for e in preloaded if e.closed] == ["slow"]


def test_preload_error_reaches_the_taker() -> None:
    pre = Preloader(GatedLoader())
    pre.start("broken")
    with pytest.raises(OSError, match="disk gone"):
        pre.take("broken", timeout=10)
    assert pre.take("broken") is None  # reported once; then a normal load happens
    pre.start("again")  # a finished preload makes room for another
    assert pre.take("again", timeout=10).model_name == "again"  # type: ignore[union-attr]
    pre.start("x")
    with pytest.raises(RuntimeError, match="already started"):
        pre.start("y")
