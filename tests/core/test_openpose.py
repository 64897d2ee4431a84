"""OpenPose (body): the network read from safetensors, the decoder, and the map it draws."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.openpose_body import WEIGHTS, body_maps, check_weights, load_network, pose_map
from heyim_desktop.core.openpose_decode import COLOURS, LIMB_FIELDS, LIMBS, decode, draw
from openpose_layout import published_tensors, random_tensors, write_body_model


@pytest.fixture(scope="module")
def tensors() -> dict[str, Any]:
    return random_tensors(seed=1)


@pytest.fixture(scope="module")
def weights(tensors: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_body_model(tmp_path_factory.mktemp("annotator") / WEIGHTS, tensors=tensors)


def _reference(t: dict[str, Any], x: Any) -> tuple[Any, Any]:
    """The published network written out with torch's functions, from the published tensors."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    def conv(h: Any, name: str, relu: bool = True) -> Any:
        w = t[f"{name}.weight"]
        h = F.conv2d(h, w, t[f"{name}.bias"], padding=w.shape[-1] // 2)
        return F.relu(h) if relu else h

    h = x
    for name in ("conv1_1", "conv1_2", "pool", "conv2_1", "conv2_2", "pool", "conv3_1", "conv3_2", "conv3_3",
                 "conv3_4", "pool", "conv4_1", "conv4_2", "conv4_3_CPM", "conv4_4_CPM"):
        h = F.max_pool2d(h, 2, 2) if name == "pool" else conv(h, name)
    features = h

    def branch(h: Any, names: list[str], last_relu: bool = False) -> Any:
        for name in names[:-1]:
            h = conv(h, name)
        return conv(h, names[-1], relu=last_relu)

    paf = branch(features, [f"conv5_{i}_CPM_L1" for i in range(1, 6)])
    heat = branch(features, [f"conv5_{i}_CPM_L2" for i in range(1, 6)])
    for t_ in range(2, 7):
        both = torch.cat([paf, heat, features], 1)
        paf = branch(both, [f"Mconv{i}_stage{t_}_L1" for i in range(1, 8)])
        # The annotator's network keeps the ReLU after its very last heatmap layer.
        heat = branch(both, [f"Mconv{i}_stage{t_}_L2" for i in range(1, 8)], last_relu=t_ == 6)
    return paf, heat


def test_the_network_reads_the_published_tensors_and_runs_as_published(tensors: dict[str, Any], weights: Path) -> None:
    import torch

    assert len(published_tensors()) == 184
    net = load_network(weights)
    state = net.state_dict()
    assert set(state) == set(published_tensors(prefixed=True))
    assert torch.equal(state["model6_2.Mconv7_stage6_L2.weight"], tensors["Mconv7_stage6_L2.weight"])
    assert torch.equal(state["model0.conv4_4_CPM.bias"], tensors["conv4_4_CPM.bias"])
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        paf, heat = net(x)
        ref_paf, ref_heat = _reference(tensors, x)
    assert paf.shape == (1, 38, 5, 7) and heat.shape == (1, 19, 5, 7)  # 1/8 of the input
    assert torch.allclose(paf, ref_paf, atol=1e-5, rtol=1e-4) and torch.allclose(heat, ref_heat, atol=1e-5, rtol=1e-4)
    bgr = np.random.RandomState(0).randint(0, 255, (90, 70, 3), dtype=np.uint8)
    heatmaps, pafs = body_maps(bgr, net)
    assert heatmaps.shape == (90, 70, 19) and pafs.shape == (90, 70, 38)


def test_names_with_the_module_prefix_load_too(tensors: dict[str, Any], tmp_path: Path) -> None:
    import torch

    prefixed = {f"{k}": v for k, v in zip(published_tensors(prefixed=True), (tensors[n] for n in published_tensors()))}
    path = write_body_model(tmp_path / WEIGHTS, tensors=prefixed)
    net = load_network(path)
    assert torch.equal(net.state_dict()["model3_1.Mconv4_stage3_L1.weight"], tensors["Mconv4_stage3_L1.weight"])


def test_a_wrong_file_is_refused(tensors: dict[str, Any], tmp_path: Path) -> None:
    import torch

    missing = dict(tensors)
    del missing["Mconv7_stage6_L2.bias"]
    with pytest.raises(ModelError, match="missing Mconv7_stage6_L2.bias"):
        check_weights(write_body_model(tmp_path / "missing.safetensors", tensors=missing))
    extra = {**tensors, "conv9_9.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="unexpected conv9_9.weight"):
        check_weights(write_body_model(tmp_path / "extra.safetensors", tensors=extra))
    misshaped = {**tensors, "conv5_5_CPM_L2.weight": torch.zeros(18, 512, 1, 1)}
    with pytest.raises(ModelError, match=r"conv5_5_CPM_L2.weight is \[18, 512, 1, 1\], expected \[19, 512, 1, 1\]"):
        load_network(write_body_model(tmp_path / "misshaped.safetensors", tensors=misshaped))
    pickle = tmp_path / "pickle.safetensors"
    pickle.write_bytes(b"\x80\x04K\x01.")  # a pickle under the right name: never opened
    with pytest.raises(ModelError, match="safetensors"):
        load_network(pickle)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all, just some text")
    with pytest.raises(ModelError, match="safetensors"):
        pose_map(_blank(), junk)


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32))


# --- the decoder on synthetic maps ---------------------------------------------------------

#: One person's 18 parts (x, y) in a 200 px high image, limbs well apart.
SKELETON = [
    (50, 30), (50, 50), (35, 52), (28, 75), (24, 98), (65, 52), (72, 75), (76, 98), (42, 100), (40, 130), (38, 160),
    (58, 100), (60, 130), (62, 160), (45, 26), (55, 26), (40, 30), (60, 30),
]
HEIGHT, WIDTH = 200, 180


def _maps(people: list[list[tuple[int, int] | None]]) -> tuple[Any, Any]:
    """Heatmaps with a Gaussian peak (1.0, sigma 2) at each part, and each limb's affinity field
    (its unit direction) painted within 3 px of it."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    heat = np.zeros((HEIGHT, WIDTH, 19))
    paf = np.zeros((HEIGHT, WIDTH, 38))
    for person in people:
        for part, point in enumerate(person):
            if point is not None:
                heat[:, :, part] = np.maximum(heat[:, :, part], np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / 8.0))
        for (a, b), (fx, fy) in zip(LIMBS, LIMB_FIELDS):
            pa, pb = person[a], person[b]
            if pa is None or pb is None:
                continue
            d = np.subtract(pb, pa, dtype=np.float64)
            length = float(np.hypot(*d))
            u = d / length
            t = np.clip(((xx - pa[0]) * u[0] + (yy - pa[1]) * u[1]) / length, 0.0, 1.0)
            near = np.hypot(xx - (pa[0] + t * d[0]), yy - (pa[1] + t * d[1])) <= 3.0
            paf[near, fx], paf[near, fy] = u[0], u[1]
    return heat.astype(np.float32), paf.astype(np.float32)


def _shifted(dx: int) -> list[tuple[int, int] | None]:
    return [(x + dx, y) for x, y in SKELETON]


def _assert_people(found: list[Any], expected: list[list[tuple[int, int] | None]]) -> None:
    assert len(found) == len(expected)
    for person, want in zip(sorted(found, key=lambda p: p.keypoints[0][0]), expected):
        assert person.parts == sum(p is not None for p in want)
        for got, point in zip(person.keypoints, want):
            assert (got is None) == (point is None)
            if got is not None and point is not None:
                assert math.dist(got, point) <= 1.0, (got, point)


def test_one_person_is_decoded_and_drawn() -> None:
    heat, paf = _maps([SKELETON])
    people = decode(heat, paf)
    _assert_people(people, [SKELETON])
    canvas = draw(people, WIDTH, HEIGHT)
    assert canvas.shape == (HEIGHT, WIDTH, 3) and canvas.dtype == np.uint8
    for part, (x, y) in enumerate(SKELETON):  # each joint a disc in its full colour
        assert tuple(canvas[y, x]) == COLOURS[part], part
    for k in range(12):  # the arms, legs and torso: a limb's middle is its colour at 60%
        (ax, ay), (bx, by) = SKELETON[LIMBS[k][0]], SKELETON[LIMBS[k][1]]
        mx, my = int((ax + bx) / 2), int((ay + by) / 2)
        assert tuple(canvas[my, mx]) == tuple(int(c * 0.6) for c in COLOURS[k]), k
    assert not canvas[170:].any() and not canvas[:, 90:].any() and not canvas[:15].any()  # black elsewhere
    ear_shoulder = (np.array(SKELETON[2]) + SKELETON[16]) // 2  # the ear-to-shoulder limbs are not drawn
    assert not canvas[ear_shoulder[1], ear_shoulder[0]].any()


def test_two_people_are_told_apart() -> None:
    second = _shifted(80)
    heat, paf = _maps([SKELETON, second])
    people = decode(heat, paf)
    _assert_people(people, [SKELETON, second])
    canvas = draw(people, WIDTH, HEIGHT)
    # Every person at the same brightness: limbs at 60% of their colour, joints at full colour.
    for part in range(18):
        assert tuple(canvas[second[part][1], second[part][0]]) == COLOURS[part]
        assert tuple(canvas[SKELETON[part][1], SKELETON[part][0]]) == COLOURS[part]


def test_a_person_missing_parts_keeps_the_rest_and_too_few_parts_are_dropped() -> None:
    no_left_arm = [None if i in (6, 7) else p for i, p in enumerate(SKELETON)]
    heat, paf = _maps([no_left_arm])
    _assert_people(decode(heat, paf), [no_left_arm])
    shoulder_arm = [p if i in (1, 2, 3) else None for i, p in enumerate(SKELETON)]  # 3 parts: not a person
    heat, paf = _maps([shoulder_arm])
    assert decode(heat, paf) == []


def test_nothing_from_empty_maps() -> None:
    heat, paf = np.zeros((64, 48, 19), np.float32), np.zeros((64, 48, 38), np.float32)
    assert decode(heat, paf) == []
    assert not draw([], 48, 64).any()
