"""A compute device the computer lacks is refused in plain words before any model work."""

from __future__ import annotations

import io

import pytest
import torch

from heyim_desktop.core import paths
from heyim_desktop.core.devices import require_device
from heyim_desktop.core.errors import DeviceUnavailable, ModelError


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only computer (also on a GPU box), and no model may be touched."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)

    def no_model_work(*_args: object) -> None:
        raise AssertionError("the model was touched before the device was checked")

    monkeypatch.setattr(paths, "ensure_demo_model", no_model_work)


@pytest.mark.usefixtures("no_gpu")
def test_a_missing_gpu_is_a_model_error_in_plain_words() -> None:
    for fine in ("auto", "cpu", "coreml", "coreml:ALL"):
        require_device(fine)
    with pytest.raises(DeviceUnavailable, match="no CUDA GPU that PyTorch can use") as info:
        require_device("cuda")
    assert isinstance(info.value, ModelError) and "automatic or the CPU" in str(info.value)
    with pytest.raises(DeviceUnavailable, match="Apple GPU"):
        require_device("mps")


@pytest.mark.usefixtures("no_gpu")
def test_the_engine_child_refuses_the_load_before_reading_the_model_and_the_parent_gets_the_class() -> None:
    from heyim_desktop.core.process.child import EngineChild
    from heyim_desktop.core.process.protocol import MessageWriter, error_from_data, read_message

    out = io.BytesIO()
    child = EngineChild(MessageWriter(out), device="cuda", precision="auto", compute_units=None)
    child._load("demo")
    out.seek(0)
    msg = read_message(out)
    assert msg is not None and msg.kind == "failed"
    error = error_from_data(msg.data["error"])
    assert isinstance(error, DeviceUnavailable) and "no CUDA GPU" in str(error)
    assert child.engine is None
