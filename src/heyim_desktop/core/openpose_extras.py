"""Hands and faces on the OpenPose map, the way the ControlNet extension finds and draws them.

Each person the body network finds gives the boxes: a hand's square around the point a third
of the forearm beyond the wrist, 1.5 times the longer of the forearm and 0.9 upper arm (as
CMU's OpenPose places it); the face's square around the nose, three times its farthest
distance to an eye (1.5 times to an ear). Boxes under 20 pixels are skipped. The hand network
sees its crop (blurred, sigma 0.8) at four sizes (184, 368, 552, 736 px square) and its 22
heatmaps are averaged at 128 x 128; each of the 21 joints is the highest point of the
heaviest blob where the heatmap, smoothed with a Gaussian (sigma 3), passes 0.05. The face
network sees its crop at 384 x 384; each of its 71 heatmaps (the extension keeps the 71st,
the background, too), brought back to the crop's size, gives its highest point when any part
passes 0.05. On the map the extension draws per person: the body, then each hand's 20 bones
(2 px lines, hue going round the 20) under its joints (blue dots, radius 4), then the face's
points (white dots, radius 3).
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from heyim_desktop.core.openpose_decode import Person

log = logging.getLogger(__name__)

Point = tuple[float, float]

MIN_BOX = 20
WRIST_BEYOND = 0.33
HAND_SCALES = (0.5, 1.0, 1.5, 2.0)
BOX_SIZE = 368
STRIDE = 8
PAD_VALUE = 128
HAND_BLUR = 0.8
HAND_MAP = 128
HAND_JOINTS = 21
HAND_THRESHOLD = 0.05
PEAK_SIGMA = 3.0
FACE_INPUT = 384
FACE_THRESHOLD = 0.05
#: The wrist (0) to each finger's four joints.
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
#: Each bone's colour: hue i / 20 at full saturation and value, as RGB 0..255.
HAND_COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(round(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))  # type: ignore[misc]
    for i in range(len(HAND_EDGES))
)
HAND_JOINT_COLOUR = (0, 0, 255)
HAND_JOINT_RADIUS = 4
FACE_COLOUR = (255, 255, 255)
FACE_RADIUS = 3
#: A point is drawn only when both its pixel coordinates pass this (the extension's test).
EPS = 0.01


@dataclass(frozen=True)
class Pose:
    """One person: the body and, where looked for and found, the hands' and face's points."""

    body: "Person"
    left_hand: tuple[Point | None, ...] | None = None
    right_hand: tuple[Point | None, ...] | None = None
    face: tuple[Point | None, ...] | None = None


def hand_boxes(keypoints: "tuple[Point | None, ...]", width: int, height: int) -> list[tuple[int, int, int, bool]]:
    """(x, y, side, is_left) of each hand whose shoulder, elbow and wrist were found (left first)."""
    import math

    out = []
    for is_left, (shoulder, elbow, wrist) in ((True, (5, 6, 7)), (False, (2, 3, 4))):
        s, e, w = keypoints[shoulder], keypoints[elbow], keypoints[wrist]
        if s is None or e is None or w is None:
            continue
        x = w[0] + WRIST_BEYOND * (w[0] - e[0])
        y = w[1] + WRIST_BEYOND * (w[1] - e[1])
        side = 1.5 * max(math.hypot(w[0] - e[0], w[1] - e[1]), 0.9 * math.hypot(e[0] - s[0], e[1] - s[1]))
        x, y = max(x - side / 2, 0.0), max(y - side / 2, 0.0)
        side = min(side if x + side <= width else width - x, side if y + side <= height else height - y)
        if side >= MIN_BOX:
            out.append((int(x), int(y), int(side), is_left))
    return out


def face_box(keypoints: "tuple[Point | None, ...]", width: int, height: int) -> tuple[int, int, int] | None:
    """(x, y, side) of the face around the nose, or None (no nose, no eye or ear, or too small).

    As the extension computes it, the right and bottom limits are checked against half the
    side, so a box near the edge may reach past it (the crop then stops at the image's edge)."""
    nose = keypoints[0]
    others = [(keypoints[i], k) for i, k in ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5))]
    if nose is None or all(p is None for p, _ in others):
        return None
    half = 0.0
    for point, k in others:
        if point is not None:
            half = max(half, k * max(abs(nose[0] - point[0]), abs(nose[1] - point[1])))
    x, y = max(nose[0] - half, 0.0), max(nose[1] - half, 0.0)
    side = min(2 * half if x + half <= width else width - x, 2 * half if y + half <= height else height - y)
    return (int(x), int(y), int(side)) if side >= MIN_BOX else None


def _resize(x: "npt.NDArray[Any]", width: int, height: int) -> "npt.NDArray[Any]":
    """The annotator's resize: area when shrinking, Lanczos otherwise, channel by channel past 3."""
    import cv2
    import numpy as np

    h, w = x.shape[:2]
    method = cv2.INTER_AREA if (height + width) / (h + w) < 1 else cv2.INTER_LANCZOS4
    if x.ndim == 2 or x.shape[2] in (1, 3):
        return np.asarray(cv2.resize(x, (width, height), interpolation=method))
    return np.stack([cv2.resize(x[:, :, i], (width, height), interpolation=method) for i in range(x.shape[2])], axis=2)


def hand_heatmaps(bgr: "npt.NDArray[np.uint8]", net: Any, device: str = "cpu") -> "npt.NDArray[np.float64]":
    """The hand network's 22 heatmaps of a BGR crop, averaged over the four sizes, at 128 x 128."""
    import cv2
    import numpy as np
    import torch

    blurred = cv2.GaussianBlur(bgr, (0, 0), HAND_BLUR)
    dtype = next(net.parameters()).dtype
    total = np.zeros((HAND_MAP, HAND_MAP, 22))
    for scale in HAND_SCALES:
        size = int(scale * BOX_SIZE)
        scaled = _resize(blurred, size, size)
        pad_h, pad_w = -size % STRIDE, -size % STRIDE
        padded = cv2.copyMakeBorder(scaled, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        x = np.ascontiguousarray(padded.astype(np.float32).transpose(2, 0, 1)[None] / 256 - 0.5)
        with torch.inference_mode():
            out = net(torch.from_numpy(x).to(device=device, dtype=dtype))
        maps = out[0].float().cpu().numpy().transpose(1, 2, 0)
        maps = _resize(maps, maps.shape[1] * STRIDE, maps.shape[0] * STRIDE)[:size, :size]
        total += _resize(maps, HAND_MAP, HAND_MAP) / len(HAND_SCALES)
    return total


def hand_peaks(heatmaps: "npt.NDArray[Any]", height: int, width: int) -> list[tuple[int, int]]:
    """Each joint's (x, y) in a crop of ``height x width``; (0, 0) where it was not found."""
    import cv2
    import numpy as np

    radius = int(4 * PEAK_SIGMA + 0.5)  # scipy's gaussian_filter support, which the annotator uses
    out = []
    for part in range(HAND_JOINTS):
        raw = np.array(heatmaps[:, :, part], dtype=np.float64)
        smooth = cv2.GaussianBlur(raw, (2 * radius + 1,) * 2, PEAK_SIGMA, borderType=cv2.BORDER_REFLECT)
        binary = np.ascontiguousarray(smooth > HAND_THRESHOLD, dtype=np.uint8)
        if not binary.any():
            out.append((0, 0))
            continue
        count, labels = cv2.connectedComponents(binary, connectivity=8)
        weights = [float(raw[labels == i].sum()) for i in range(1, count)]
        raw[labels != 1 + int(np.argmax(weights))] = 0
        y, x = np.unravel_index(int(np.argmax(raw)), raw.shape)
        out.append((int(float(x) * width / HAND_MAP), int(float(y) * height / HAND_MAP)))
    return out


def face_heatmaps(bgr: "npt.NDArray[np.uint8]", net: Any, device: str = "cpu") -> "npt.NDArray[np.float32]":
    """The face network's 71 heatmaps (71, H, W) of a BGR crop, brought back to its size."""
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812

    height, width = bgr.shape[:2]
    scaled = _resize(bgr, FACE_INPUT, FACE_INPUT)
    x = torch.from_numpy(np.ascontiguousarray(scaled)).permute(2, 0, 1)[None] / 256.0 - 0.5
    dtype = next(net.parameters()).dtype
    with torch.inference_mode():
        out = net(x.to(device=device, dtype=dtype)).float()
        maps = F.interpolate(out, (height, width), mode="bilinear", align_corners=True)
    return np.asarray(maps[0].cpu().numpy())


def face_peaks(heatmaps: "npt.NDArray[Any]") -> list[tuple[int, int]]:
    """The (x, y) of each heatmap's highest point, for the heatmaps that pass 0.05 anywhere."""
    import numpy as np

    out = []
    for part in heatmaps:
        if (part > FACE_THRESHOLD).any():
            y, x = np.unravel_index(int(np.argmax(np.where(part > FACE_THRESHOLD, part, -np.inf))), part.shape)
            out.append((int(x), int(y)))
    return out


def _placed(peaks: list[tuple[int, int]], x0: int, y0: int, width: int, height: int) -> tuple[Point | None, ...]:
    """Crop peaks as image pixels where the extension draws them: it keeps 0 as "not found" and
    stores the rest as float32 fractions of the image, which it scales back to draw."""
    import numpy as np

    out: list[Point | None] = []
    for px, py in peaks:
        if px < 1e-6 or py < 1e-6:
            out.append(None)
            continue
        fx = np.float32(np.float32(px + x0) / np.float32(width))
        fy = np.float32(np.float32(py + y0) / np.float32(height))
        out.append((float(fx * np.float32(width)), float(fy * np.float32(height))))
    return tuple(out)


def detect_poses(bgr: "npt.NDArray[np.uint8]", people: "list[Person]", hand_net: Any = None, face_net: Any = None,
                 device: str = "cpu") -> list[Pose]:
    """Each person with their hands (when ``hand_net``) and face (when ``face_net``) from the BGR image."""
    height, width = bgr.shape[:2]
    poses = []
    for person in people:
        hands: dict[bool, tuple[Point | None, ...]] = {}
        face = None
        if hand_net is not None:
            for x, y, side, is_left in hand_boxes(person.keypoints, width, height):
                crop = bgr[y:y + side, x:x + side]
                peaks = hand_peaks(hand_heatmaps(crop, hand_net, device), crop.shape[0], crop.shape[1])
                hands[is_left] = _placed(peaks, x, y, width, height)
        if face_net is not None:
            box = face_box(person.keypoints, width, height)
            if box is not None:
                x, y, side = box
                peaks = face_peaks(face_heatmaps(bgr[y:y + side, x:x + side], face_net, device))
                face = _placed(peaks, x, y, width, height) if peaks else None
        poses.append(Pose(person, hands.get(True), hands.get(False), face))
    return poses


def _visible(point: Point | None) -> tuple[int, int] | None:
    if point is None:
        return None
    x, y = int(point[0]), int(point[1])
    return (x, y) if x > EPS and y > EPS else None


def draw_hand(canvas: "npt.NDArray[np.uint8]", points: tuple[Point | None, ...] | None) -> None:
    """A hand's bones (hue by bone) and joints (blue dots) onto the RGB canvas, in place."""
    import cv2

    if not points:
        return
    shown = [_visible(p) for p in points]
    for (a, b), colour in zip(HAND_EDGES, HAND_COLOURS):
        pa, pb = shown[a], shown[b]
        if pa is not None and pb is not None:
            cv2.line(canvas, pa, pb, colour, thickness=2)
    for p in shown:
        if p is not None:
            cv2.circle(canvas, p, HAND_JOINT_RADIUS, HAND_JOINT_COLOUR, thickness=-1)


def draw_face(canvas: "npt.NDArray[np.uint8]", points: tuple[Point | None, ...] | None) -> None:
    """A face's points (white dots) onto the RGB canvas, in place."""
    import cv2

    for p in map(_visible, points or ()):
        if p is not None:
            cv2.circle(canvas, p, FACE_RADIUS, FACE_COLOUR, thickness=-1)


def draw_poses(poses: list[Pose], width: int, height: int, *, body: bool = True, hands: bool = True,
               face: bool = True) -> "npt.NDArray[np.uint8]":
    """The map (H, W, 3) RGB uint8, person after person: body, left hand, right hand, face."""
    import numpy as np

    from heyim_desktop.core.openpose_decode import draw_body

    canvas: "npt.NDArray[np.uint8]" = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        if body:
            canvas = draw_body(canvas, pose.body)
        if hands:
            draw_hand(canvas, pose.left_hand)
            draw_hand(canvas, pose.right_hand)
        if face:
            draw_face(canvas, pose.face)
    return canvas


def pose_map(image: "Image.Image", body_weights: Path, device: str = "cpu", *, hand_weights: Path | None = None,
             face_weights: Path | None = None, draw_body: bool = True) -> "Image.Image":
    """The OpenPose map of ``image`` (RGB) at its size: the body (unless ``draw_body`` is off),
    with the hands when ``hand_weights`` and the face when ``face_weights`` are given."""
    import numpy as np
    from PIL import Image as PILImage

    from heyim_desktop.core import openpose_body, openpose_parts
    from heyim_desktop.core.openpose_decode import decode

    body_net = openpose_body.cached_network(body_weights, device)
    hand_net = openpose_parts.cached_network(hand_weights, openpose_parts.HAND, device) if hand_weights else None
    face_net = openpose_parts.cached_network(face_weights, openpose_parts.FACE, device) if face_weights else None
    # The annotator hands its networks BGR pixels (their weights come from Caffe).
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[:, :, ::-1])
    people = decode(*openpose_body.body_maps(bgr, body_net, device))
    poses = detect_poses(bgr, people, hand_net, face_net, device)
    log.debug("OpenPose found %d people", len(poses))
    canvas = draw_poses(poses, image.width, image.height, body=draw_body, hands=hand_net is not None,
                        face=face_net is not None)
    return PILImage.fromarray(canvas, mode="RGB")
