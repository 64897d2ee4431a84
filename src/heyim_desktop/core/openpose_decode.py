"""People from OpenPose heatmaps and part-affinity fields, and the pose map ControlNets read.

The published bottom-up method (Cao et al., "Realtime Multi-Person 2D Pose Estimation using
Part Affinity Fields"), with the annotator's numbers: part peaks are local maxima of each
heatmap smoothed with a Gaussian (sigma 3) above 0.1; a candidate limb is scored by sampling
its affinity field at 10 points along it (the mean projection on the limb's direction plus a
penalty for limbs longer than half the image height) and kept when over 80% of the samples
pass 0.05; limbs are matched greedily by score and joined into people, who are kept with at
least 4 parts and a mean score of 0.4. The map: on black, each limb a filled ellipse in its
colour at 60%, then each joint a disc in its full colour.

Parts (COCO order): 0 nose, 1 neck, 2-4 right shoulder, elbow, wrist, 5-7 left shoulder,
elbow, wrist, 8-10 right hip, knee, ankle, 11-13 left hip, knee, ankle, 14 right eye,
15 left eye, 16 right ear, 17 left ear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PARTS = 18
#: The limbs (part pairs) in the order they are matched and drawn.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
#: The affinity-field channels (x, y) of each limb.
LIMB_FIELDS: tuple[tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
    (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)
#: Limbs that start a new person; the two ear-to-shoulder ones only join existing people.
STARTING_LIMBS = 17
#: Limbs drawn (the ear-to-shoulder ones are not).
DRAWN_LIMBS = 17
#: RGB, one per part (and per drawn limb).
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
PEAK_SIGMA = 3.0
PEAK_THRESHOLD = 0.1
LIMB_SAMPLES = 10
LIMB_THRESHOLD = 0.05
LIMB_PASS_RATIO = 0.8
MIN_PARTS = 4
MIN_MEAN_SCORE = 0.4
STICK_WIDTH = 4
JOINT_RADIUS = 4
LIMB_BLEND = 0.6


@dataclass(frozen=True)
class Peak:
    x: int
    y: int
    score: float
    #: Index among all the image's peaks.
    index: int


@dataclass(frozen=True)
class Person:
    #: (x, y) of each of the 18 parts, None where it was not found.
    keypoints: tuple[tuple[float, float] | None, ...]
    score: float
    parts: int


def find_peaks(heatmaps: "npt.NDArray[Any]") -> list[list[Peak]]:
    """Each part's peaks (row by row, left to right), numbered across all parts."""
    import cv2
    import numpy as np

    out: list[list[Peak]] = []
    counter = 0
    radius = int(4 * PEAK_SIGMA + 0.5)  # the Gaussian's support: 4 sigma, as scipy truncates it
    for part in range(PARTS):
        raw = np.ascontiguousarray(heatmaps[:, :, part], dtype=np.float64)
        smooth = cv2.GaussianBlur(raw, (2 * radius + 1, 2 * radius + 1), PEAK_SIGMA, borderType=cv2.BORDER_REFLECT)
        # A peak is at least each of its four neighbours (zero beyond the border).
        padded = np.pad(smooth, 1)
        peak = ((smooth >= padded[:-2, 1:-1]) & (smooth >= padded[2:, 1:-1]) & (smooth >= padded[1:-1, :-2])
                & (smooth >= padded[1:-1, 2:]) & (smooth > PEAK_THRESHOLD))
        ys, xs = np.nonzero(peak)
        found = [Peak(int(x), int(y), float(raw[y, x]), counter + i) for i, (x, y) in enumerate(zip(xs, ys))]
        counter += len(found)
        out.append(found)
    return out


def _limb_score(field: "npt.NDArray[Any]", a: Peak, b: Peak, height: int) -> float | None:
    """The limb a -> b's score on its affinity field (H, W, 2), or None when it does not pass."""
    import numpy as np

    dx, dy = b.x - a.x, b.y - a.y
    norm = max(0.001, math.hypot(dx, dy))
    xs = np.rint(np.linspace(a.x, b.x, LIMB_SAMPLES)).astype(int)
    ys = np.rint(np.linspace(a.y, b.y, LIMB_SAMPLES)).astype(int)
    along = field[ys, xs, 0] * (dx / norm) + field[ys, xs, 1] * (dy / norm)
    score = float(along.mean()) + min(0.5 * height / norm - 1.0, 0.0)
    passing = int(np.count_nonzero(along > LIMB_THRESHOLD))
    if passing > LIMB_PASS_RATIO * LIMB_SAMPLES and score > 0:
        return score
    return None


def match_limbs(peaks: list[list[Peak]], pafs: "npt.NDArray[Any]") -> list[list[tuple[Peak, Peak, float]]]:
    """Each limb's connections (start peak, end peak, score): the best-scored first, each peak used once."""
    height = pafs.shape[0]
    out: list[list[tuple[Peak, Peak, float]]] = []
    for (pa, pb), (fx, fy) in zip(LIMBS, LIMB_FIELDS):
        starts, ends = peaks[pa], peaks[pb]
        field = pafs[:, :, [fx, fy]]
        scored = []
        for i, a in enumerate(starts):
            for j, b in enumerate(ends):
                s = _limb_score(field, a, b, height)
                if s is not None:
                    scored.append((s, i, j))
        scored.sort(key=lambda t: t[0], reverse=True)  # stable: ties keep the scan order
        used_a: set[int] = set()
        used_b: set[int] = set()
        chosen: list[tuple[Peak, Peak, float]] = []
        for s, i, j in scored:
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            chosen.append((starts[i], ends[j], s))
            if len(chosen) >= min(len(starts), len(ends)):
                break
        out.append(chosen)
    return out


@dataclass
class _Draft:
    parts: list[int]  # peak index per part, -1 where none
    score: float
    count: int


def assemble(peaks: list[list[Peak]], limbs: list[list[tuple[Peak, Peak, float]]]) -> list[Person]:
    """People from the matched limbs: limbs sharing a peak join one person."""
    by_index = {p.index: p for part in peaks for p in part}
    drafts: list[_Draft] = []
    for k, connections in enumerate(limbs):
        pa, pb = LIMBS[k]
        for a, b, s in connections:
            hits = [d for d in drafts if d.parts[pa] == a.index or d.parts[pb] == b.index][:2]
            if len(hits) == 1:
                d = hits[0]
                if d.parts[pb] != b.index:
                    d.parts[pb] = b.index
                    d.count += 1
                    d.score += b.score + s
            elif len(hits) == 2:
                first, second = hits
                if not any(x >= 0 and y >= 0 for x, y in zip(first.parts, second.parts)):
                    first.parts = [x if x >= 0 else y for x, y in zip(first.parts, second.parts)]
                    first.count += second.count
                    first.score += second.score + s
                    drafts.remove(second)
                else:
                    first.parts[pb] = b.index
                    first.count += 1
                    first.score += b.score + s
            elif k < STARTING_LIMBS:
                parts = [-1] * PARTS
                parts[pa], parts[pb] = a.index, b.index
                drafts.append(_Draft(parts, a.score + b.score + s, 2))
    people = []
    for d in drafts:
        if d.count < MIN_PARTS or d.score / d.count < MIN_MEAN_SCORE:
            continue
        points = tuple((float(by_index[i].x), float(by_index[i].y)) if i >= 0 else None for i in d.parts)
        people.append(Person(points, d.score, d.count))
    return people


def decode(heatmaps: "npt.NDArray[Any]", pafs: "npt.NDArray[Any]") -> list[Person]:
    """The people in heatmaps (H, W, >= 18) and affinity fields (H, W, 38) of one image."""
    peaks = find_peaks(heatmaps)
    return assemble(peaks, match_limbs(peaks, pafs))


def draw_body(canvas: "npt.NDArray[np.uint8]", person: Person) -> "npt.NDArray[np.uint8]":
    """One person onto the RGB canvas as the extension draws a body: the limbs at 60% of their
    colour, then the joints at full colour. Gives the canvas (drawn in place)."""
    import cv2
    import numpy as np

    height, width = canvas.shape[:2]

    def placed(point: tuple[float, float]) -> tuple[float, float]:
        # The extension keeps keypoints as fractions of the image and scales them back to draw;
        # the same round trip lands on the same pixels (x / w * w is not always x in floats).
        return point[0] / width * width, point[1] / height * height

    for (pa, pb), colour in zip(LIMBS[:DRAWN_LIMBS], COLOURS):
        ka, kb = person.keypoints[pa], person.keypoints[pb]
        if ka is None or kb is None:
            continue
        a, b = placed(ka), placed(kb)
        centre = (int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2))
        length = math.hypot(a[0] - b[0], a[1] - b[1])
        angle = math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, np.asarray(polygon, np.int32), tuple(int(c * LIMB_BLEND) for c in colour))
    for point, colour in zip(person.keypoints, COLOURS):
        if point is not None:
            x, y = placed(point)
            cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, colour, thickness=-1)
    return canvas


def draw(people: list[Person], width: int, height: int) -> "npt.NDArray[np.uint8]":
    """The pose map (H, W, 3) RGB uint8, person after person as the extension draws it: each
    person's limbs at 60% of their colour, then its joints at full colour. (One version of the
    extension dimmed the whole canvas once per person, darkening earlier people; its current
    drawing and the ControlNet 1.1 annotator, which made the training maps, do not.)"""
    import numpy as np

    canvas: "npt.NDArray[np.uint8]" = np.zeros((height, width, 3), np.uint8)
    for person in people:
        canvas = draw_body(canvas, person)
    return canvas
