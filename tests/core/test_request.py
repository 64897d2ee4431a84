from __future__ import annotations

import pytest
from PIL import Image

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.request import MAX_SEED, GenerationRequest

IMG = Image.new("RGB", (64, 64))


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "   \n"}, "prompt", "must not be empty"),
        ({"prompt": "x" * 10_001}, "prompt", "at most"),
        ({"steps": 0}, "steps", "from 1 to 150"),
        ({"steps": 151}, "steps", "from 1 to 150"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"steps": True}, "steps", "whole number"),
        ({"guidance": -0.1}, "guidance", "from 0 to 30"),
        ({"guidance": 30.5}, "guidance", "from 0 to 30"),
        ({"guidance": float("nan")}, "guidance", "from 0 to 30"),
        ({"guidance": "7"}, "guidance", "must be a number"),
        ({"seed": -1}, "seed", f"from 0 to {MAX_SEED}"),
        ({"seed": MAX_SEED + 1}, "seed", f"from 0 to {MAX_SEED}"),
        ({"width": 60}, "width", "from 64 to 2048"),
        ({"width": 2056}, "width", "from 64 to 2048"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 513}, "height", "multiple of 8"),
        ({"count": 0}, "count", "from 1 to 16"),
        ({"count": 17}, "count", "from 1 to 16"),
        ({"scheduler": "Heun++ 9000"}, "scheduler", "unknown scheduler"),
        ({"init_image": IMG, "strength": 0}, "strength", "greater than 0"),
        ({"init_image": IMG, "strength": 1.01}, "strength", "from 0 to 1"),
        ({"init_image": IMG, "strength": 0.2, "steps": 2}, "strength", "leaves no step"),
    ],
)
def test_invalid_fields_name_the_field_and_range(changes: dict, field: str, fragment: str) -> None:
    kwargs = {"prompt": "a red fox", **changes}
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**kwargs)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    "changes",
    [
        {"steps": 1}, {"steps": 150}, {"guidance": 0}, {"guidance": 30}, {"seed": 0}, {"seed": MAX_SEED},
        {"width": 64, "height": 2048}, {"count": 16}, {"init_image": IMG, "strength": 1.0},
        {"init_image": IMG, "strength": 0.01, "steps": 100},
    ],
)
def test_boundaries_are_accepted(changes: dict) -> None:
    GenerationRequest(prompt="a red fox", **changes)


def test_request_is_frozen() -> None:
    req = GenerationRequest(prompt="a")
    with pytest.raises(AttributeError):
        req.steps = 5  # type: ignore[misc]


def test_default_scheduler_depends_on_mode() -> None:
    assert GenerationRequest(prompt="a").scheduler == "DPM++ 2M"
    assert GenerationRequest(prompt="a", init_image=IMG).scheduler == "PNDM"
    assert GenerationRequest(prompt="a", scheduler="euler_ancestral").scheduler == "Euler a"
    assert GenerationRequest(prompt="a", scheduler="dpmpp_2m_karras").scheduler == "DPM++ 2M Karras"


def test_guidance_and_img2img_boost() -> None:
    txt = GenerationRequest(prompt="a", guidance=7)
    assert txt.effective_guidance == 7 and txt.uses_cfg
    img = GenerationRequest(prompt="a", guidance=7, init_image=IMG)
    assert img.effective_guidance == 8.5
    assert not GenerationRequest(prompt="a", guidance=1).uses_cfg
    assert GenerationRequest(prompt="a", guidance=1, init_image=IMG, guidance_boost=0).uses_cfg is False


def test_seed_resolution_and_per_image_seeds() -> None:
    req = GenerationRequest(prompt="a", count=3)
    assert req.seed is None
    resolved = req.with_seed()
    assert resolved.seed is not None and 0 <= resolved.seed <= MAX_SEED
    assert resolved.with_seed() is resolved
    wrap = GenerationRequest(prompt="a", seed=MAX_SEED, count=2)
    assert wrap.image_seeds() == [MAX_SEED, 0]
    with pytest.raises(ValueError):
        req.image_seeds()
