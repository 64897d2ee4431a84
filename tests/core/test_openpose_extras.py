"""OpenPose hands and face: the two networks read from safetensors, their boxes, peaks and drawing,
which files offer which module, and the extension's resize-with-pad before any OpenPose detector."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.core import openpose_extras as extras
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.openpose_decode import Person
from heyim_desktop.core.openpose_parts import FACE, HAND, check_weights, load_network
from openpose_layout import (
    FACE_HEATMAPS,
    HAND_HEATMAPS,
    parts_tensors,
    random_parts_tensors,
    write_body_model,
    write_face_model,
    write_hand_model,
)


def _reference(t: dict[str, Any], x: Any) -> Any:
    """The published hand/face network written out with torch's functions, from the published tensors."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    def conv(h: Any, name: str, relu: bool = True) -> Any:
        w = t[f"{name}.weight"]
        h = F.conv2d(h, w, t[f"{name}.bias"], padding=w.shape[-1] // 2)
        return F.relu(h) if relu else h

    h = x
    for name in ("conv1_1", "conv1_2", "pool", "conv2_1", "conv2_2", "pool", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
                 "pool", "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3_CPM"):
        h = F.max_pool2d(h, 2, 2) if name == "pool" else conv(h, name)
    features = h
    heat = conv(conv(features, "conv6_1_CPM"), "conv6_2_CPM", relu=False)
    for stage in range(2, 7):
        h = torch.cat([heat, features], 1)
        for i in range(1, 7):
            h = conv(h, f"Mconv{i}_stage{stage}")
        heat = conv(h, f"Mconv7_stage{stage}", relu=False)
    return heat


@pytest.mark.parametrize("model, heatmaps", [(HAND, HAND_HEATMAPS), (FACE, FACE_HEATMAPS)])
def test_the_networks_read_the_published_tensors_and_run_as_published(model: Any, heatmaps: int, tmp_path: Path) -> None:
    import torch

    tensors = random_parts_tensors(heatmaps, seed=5)
    assert len(tensors) == 104
    net = load_network(write_body_model(tmp_path / model.weights, tensors=tensors), model)
    assert {k.split(".", 1)[1] for k in net.state_dict()} == set(parts_tensors(heatmaps))
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got, want = net(x), _reference(tensors, x)
    assert got.shape == (1, heatmaps, 4, 6)  # 1/8 of the input
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_the_hand_model_loads_with_its_module_prefixes_and_the_face_model_does_not(tmp_path: Path) -> None:
    import torch

    flat = random_parts_tensors(HAND_HEATMAPS, seed=2)
    prefixed = dict(zip(parts_tensors(HAND_HEATMAPS, prefixed=True), (flat[n] for n in parts_tensors(HAND_HEATMAPS))))
    net = load_network(write_body_model(tmp_path / "hand.safetensors", tensors=prefixed), HAND)
    assert torch.equal(net.state_dict()["model6.Mconv7_stage6.weight"], flat["Mconv7_stage6.weight"])
    face = dict(zip(parts_tensors(FACE_HEATMAPS, prefixed=True), random_parts_tensors(FACE_HEATMAPS).values()))
    with pytest.raises(ModelError, match="not the OpenPose face model"):
        check_weights(write_body_model(tmp_path / "face.safetensors", tensors=face), FACE)


def test_wrong_files_are_refused_by_name_and_shape(tmp_path: Path) -> None:
    face = write_face_model(tmp_path / "facenet.safetensors")
    with pytest.raises(ModelError, match=r"hand model \(conv6_2_CPM.weight is \[71, 512, 1, 1\], expected \[22, 512"):
        check_weights(face, HAND)  # the same layer names: told apart by their shapes
    with pytest.raises(ModelError, match="not the OpenPose face model"):
        check_weights(write_hand_model(tmp_path / "hand_pose_model.safetensors"), FACE)
    with pytest.raises(ModelError, match="hand model .missing Mconv1_stage2.bias.*unexpected Mconv1_stage2_L1.bias"):
        check_weights(write_body_model(tmp_path / "body_pose_model.safetensors"), HAND)
    pickle = tmp_path / "pickle.safetensors"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelError, match="hand_pose_model.pth"):
        load_network(pickle, HAND)


# --- boxes, peaks, points --------------------------------------------------------------------

def _person(points: dict[int, tuple[float, float]]) -> tuple[tuple[float, float] | None, ...]:
    return tuple(points.get(i) for i in range(18))


def test_hand_boxes_follow_the_forearm_and_the_face_box_the_head() -> None:
    # Right arm straight down: shoulder (100, 50), elbow (100, 90), wrist (100, 120): the hand's
    # centre is a third of the forearm past the wrist, its side 1.5 * max(30, 0.9 * 40) = 54.
    arms = _person({2: (100.0, 50.0), 3: (100.0, 90.0), 4: (100.0, 120.0)})
    assert extras.hand_boxes(arms, 300, 300) == [(73, 102, 54, False)]
    assert extras.hand_boxes(arms, 300, 140) == [(73, 102, 37, False)]  # cut at the image's bottom
    assert extras.hand_boxes(arms, 300, 115) == []  # less than 20 px left
    left = _person({5: (10.0, 10.0), 6: (12.0, 12.0), 7: (14.0, 14.0)})
    assert extras.hand_boxes(left, 300, 300) == []  # a 20 px hand needs a longer arm
    # The face: nose (100, 80), an eye 10 px off (x3 = 30), an ear 24 px off (x1.5 = 36): side 72.
    head = _person({0: (100.0, 80.0), 14: (90.0, 75.0), 16: (76.0, 80.0)})
    assert extras.face_box(head, 300, 300) == (64, 44, 72)
    assert extras.face_box(_person({0: (100.0, 80.0)}), 300, 300) is None  # no eye or ear
    assert extras.face_box(_person({14: (90.0, 75.0), 16: (76.0, 80.0)}), 300, 300) is None  # no nose


def test_hand_peaks_take_the_heaviest_blob_and_scale_to_the_crop() -> None:
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float64)
    maps = np.zeros((128, 128, 22))
    maps[:, :, 0] = 0.6 * np.exp(-((xx - 30) ** 2 + (yy - 40) ** 2) / 50.0)  # the wider blob wins
    maps[:, :, 0] += 0.9 * np.exp(-((xx - 100) ** 2 + (yy - 100) ** 2) / 4.0)
    maps[:, :, 1] = 0.5 * np.exp(-((xx - 64) ** 2 + (yy - 32) ** 2) / 50.0)
    peaks = extras.hand_peaks(maps, 256, 64)  # a crop 64 wide, 256 high
    assert peaks[0] == (30 * 64 // 128, 40 * 256 // 128)
    assert peaks[1] == (32, 64)
    assert peaks[2:] == [(0, 0)] * 19  # nothing passes 0.05: "not found"


def test_face_peaks_skip_the_maps_that_never_pass_the_threshold() -> None:
    maps = np.zeros((71, 20, 30), np.float32)
    maps[0, 5, 7] = 0.3
    maps[3, 12, 2], maps[3, 1, 1] = 0.2, 0.9
    maps[70, 19, 29] = 0.06  # the background map counts too, as in the extension
    maps[5, 4, 4] = 0.04
    assert extras.face_peaks(maps) == [(7, 5), (1, 1), (29, 19)]


class _Spot:
    """A stand-in network: every heatmap one bright spot at (fx, fy) of its input."""

    def __init__(self, channels: int, fx: float, fy: float) -> None:
        import torch

        self.channels, self.fx, self.fy = channels, fx, fy
        self.weight = torch.zeros(1)

    def parameters(self) -> Any:
        return iter([self.weight])

    def __call__(self, x: Any) -> Any:
        import torch

        h, w = x.shape[2] // 8, x.shape[3] // 8
        out = torch.zeros(1, self.channels, h, w)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        spot = torch.exp(-((xx - self.fx * (w - 1)) ** 2 + (yy - self.fy * (h - 1)) ** 2) / 2.0)
        out[0, :] = spot
        return out


def test_hands_and_face_land_where_their_boxes_put_them() -> None:
    body = _person({0: (100.0, 80.0), 14: (90.0, 75.0), 16: (76.0, 80.0),
                    2: (100.0, 50.0), 3: (100.0, 90.0), 4: (100.0, 120.0)})
    image = np.zeros((300, 300, 3), np.uint8)
    poses = extras.detect_poses(image, [Person(body, 1.0, 6)], _Spot(22, 0.5, 0.5), _Spot(71, 0.25, 0.75))
    pose = poses[0]
    assert pose.left_hand is None and pose.right_hand is not None and len(pose.right_hand) == 21
    for point in pose.right_hand:  # the box (73, 102, 54)'s middle
        assert point is not None and abs(point[0] - 100) <= 2 and abs(point[1] - 129) <= 2
    assert pose.face is not None and len(pose.face) == 71  # the box (64, 44, 72): a quarter across, 3/4 down
    assert all(p is not None and abs(p[0] - 82) <= 1 and abs(p[1] - 98) <= 1 for p in pose.face)
    alone = extras.detect_poses(image, [Person(body, 1.0, 6)])
    assert alone[0].right_hand is None and alone[0].face is None


# --- drawing -----------------------------------------------------------------------------------

def test_the_bones_are_coloured_round_the_hue_circle() -> None:
    assert len(extras.HAND_EDGES) == 20 and {b for e in extras.HAND_EDGES for b in e} == set(range(21))
    for i, colour in enumerate(extras.HAND_COLOURS):
        r, g, b = colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)
        assert colour == (round(r * 255), round(g * 255), round(b * 255))
    assert extras.HAND_COLOURS[0] == (255, 0, 0) and extras.HAND_COLOURS[10] == (0, 255, 255)


def _hand() -> tuple[tuple[float, float] | None, ...]:
    """A wrist at (60, 150) and five straight fingers going up, 30 px apart."""
    points: list[tuple[float, float] | None] = [(60.0, 150.0)]
    for finger in range(5):
        points += [(20.0 + 20 * finger, 130.0 - 20 * j) for j in range(4)]
    return tuple(points)


def test_hands_face_and_body_are_drawn_as_the_extension_draws_them() -> None:
    body = _person({1: (100.0, 40.0), 2: (80.0, 40.0), 3: (80.0, 80.0)})
    face = ((150.0, 30.0), (170.0, 30.0), None)
    pose = extras.Pose(Person(body, 1.0, 3), left_hand=_hand(), right_hand=None, face=face)
    canvas = extras.draw_poses([pose], 200, 200)
    assert tuple(canvas[150, 60]) == extras.HAND_JOINT_COLOUR  # the wrist: a blue dot
    assert tuple(canvas[70, 20]) == extras.HAND_JOINT_COLOUR  # a fingertip
    # Between two joints of the first finger (bone 1: joints 1 -> 2), the bone's colour.
    assert tuple(canvas[120, 20]) == extras.HAND_COLOURS[1]
    assert tuple(canvas[100, 100]) == extras.HAND_COLOURS[18]  # the fifth finger, its third bone
    assert tuple(canvas[30, 150]) == extras.FACE_COLOUR and tuple(canvas[30, 170]) == extras.FACE_COLOUR
    assert tuple(canvas[33, 150]) == extras.FACE_COLOUR and not canvas[30, 154].any()  # radius 3
    assert tuple(canvas[40, 100]) == (255, 85, 0)  # the neck's joint: the body is there too
    only_face = extras.draw_poses([pose], 200, 200, body=False, hands=False)
    assert tuple(only_face[30, 150]) == extras.FACE_COLOUR and not only_face[40, 100].any()
    assert not only_face[150, 60].any()
    hands_only = extras.draw_poses([pose], 200, 200, face=False)
    assert not hands_only[30, 150].any() and tuple(hands_only[150, 60]) == extras.HAND_JOINT_COLOUR


def test_points_at_zero_are_not_drawn() -> None:
    placed = extras._placed([(0, 5), (5, 0), (3, 4)], 10, 20, 100, 100)
    assert placed[:2] == (None, None) and placed[2] == pytest.approx((13.0, 24.0))
    canvas = np.zeros((50, 50, 3), np.uint8)
    extras.draw_face(canvas, ((0.0, 20.0), (20.0, 20.0)))
    assert not canvas[20, :5].any() and canvas[20, 20].all()


# --- which files offer which module; the extension's resize-with-pad ------------------------------

def test_each_module_is_offered_only_with_all_its_files_in_one_folder(tmp_path: Path) -> None:
    from heyim_desktop.core.control_preprocess import annotator_folder, network_hint, network_preprocessors

    folder = tmp_path / "annotator" / "openpose"
    folder.mkdir(parents=True)
    body = folder / "body_pose_model.safetensors"
    hand = folder / "hand_pose_model.safetensors"
    face = tmp_path / "annotator" / "facenet.safetensors"  # in another folder: not beside the body model
    for path in (body, hand, face):
        path.write_bytes(b"x")
    offered = {p.name: ok for p, ok in network_preprocessors([body, hand, face])}
    assert offered["openpose"] and offered["openpose_hand"]
    assert not offered["openpose_face"] and not offered["openpose_faceonly"] and not offered["openpose_full"]
    assert annotator_folder([body, hand, face], "openpose_hand") == body
    assert annotator_folder([body, hand, face], "openpose_full") is None
    moved = folder / "facenet.safetensors"
    offered = {p.name: ok for p, ok in network_preprocessors([body, hand, moved])}
    assert all(offered[n] for n in ("openpose_face", "openpose_faceonly", "openpose_full"))
    assert not {p.name: ok for p, ok in network_preprocessors([hand, moved])}["openpose_hand"]
    hint = network_hint("openpose_full")
    assert all(f in hint for f in ("body_pose_model.safetensors", "hand_pose_model.safetensors", "facenet.safetensors"))
    assert "facenet" not in network_hint("openpose_hand") and "hand_pose" not in network_hint("openpose_faceonly")


def test_openpose_input_is_resized_and_padded_as_the_extension_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core import control_preprocess

    rng = np.random.RandomState(0)
    photo = Image.fromarray(rng.randint(0, 255, (100, 70, 3), dtype=np.uint8))
    padded, keep = control_preprocess._resize_with_pad(photo, 64)
    assert keep == (64, 91) and padded.size == (64, 128)  # 70 -> 64, 100 -> 91.4 -> 91; then to x64
    arr = np.asarray(padded)
    assert (arr[91:] == arr[90]).all()  # the last row repeated
    import cv2

    assert np.array_equal(arr[:91], cv2.resize(np.asarray(photo), (64, 91), interpolation=cv2.INTER_AREA))
    big, _ = control_preprocess._resize_with_pad(photo, 128)
    assert np.array_equal(np.asarray(big)[:183, :128],
                          cv2.resize(np.asarray(photo), (128, 183), interpolation=cv2.INTER_CUBIC))
    seen: list[tuple[int, int]] = []

    def fake_map(image: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        seen.append(image.size)
        return Image.new("RGB", image.size, (9, 9, 9))

    monkeypatch.setattr(extras, "pose_map", fake_map)
    out = control_preprocess.detect(photo, "openpose_full", processor_res=64, annotator="/x/body_pose_model.safetensors")
    assert seen == [(64, 128)] and out.size == (64, 91)  # the detector saw the padded image; the map is cut back
    out = control_preprocess.detect(photo, "openpose", annotator="/x/body_pose_model.safetensors")
    assert seen[-1] == (512, 768) and out.size == (512, 731)  # the default resolution, 512

