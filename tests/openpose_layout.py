"""The OpenPose body model's published tensors (as ``body_pose_model.pth`` names them), and a
random stand-in saved as ``body_pose_model.safetensors``.

Written down here from the published model, not taken from HeyIm's module, so a wrong name or
shape there fails the tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: (layer, out, in, kernel) of the VGG-19 front, in order.
FRONT = [
    ("conv1_1", 64, 3, 3), ("conv1_2", 64, 64, 3),
    ("conv2_1", 128, 64, 3), ("conv2_2", 128, 128, 3),
    ("conv3_1", 256, 128, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3),
    ("conv4_1", 512, 256, 3), ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 256, 512, 3), ("conv4_4_CPM", 128, 256, 3),
]
#: Stage 1, branch L1 (38 affinity-field channels) and L2 (19 heatmap channels).
STAGE1 = {
    "L1": [("conv5_1_CPM_L1", 128, 128, 3), ("conv5_2_CPM_L1", 128, 128, 3), ("conv5_3_CPM_L1", 128, 128, 3),
           ("conv5_4_CPM_L1", 512, 128, 1), ("conv5_5_CPM_L1", 38, 512, 1)],
    "L2": [("conv5_1_CPM_L2", 128, 128, 3), ("conv5_2_CPM_L2", 128, 128, 3), ("conv5_3_CPM_L2", 128, 128, 3),
           ("conv5_4_CPM_L2", 512, 128, 1), ("conv5_5_CPM_L2", 19, 512, 1)],
}
#: Stages 2 to 6: "{t}" is the stage; the first layer sees 38 + 19 + 128 = 185 channels.
LATER = {
    "L1": [("Mconv1_stage{t}_L1", 128, 185, 7), ("Mconv2_stage{t}_L1", 128, 128, 7), ("Mconv3_stage{t}_L1", 128, 128, 7),
           ("Mconv4_stage{t}_L1", 128, 128, 7), ("Mconv5_stage{t}_L1", 128, 128, 7), ("Mconv6_stage{t}_L1", 128, 128, 1),
           ("Mconv7_stage{t}_L1", 38, 128, 1)],
    "L2": [("Mconv1_stage{t}_L2", 128, 185, 7), ("Mconv2_stage{t}_L2", 128, 128, 7), ("Mconv3_stage{t}_L2", 128, 128, 7),
           ("Mconv4_stage{t}_L2", 128, 128, 7), ("Mconv5_stage{t}_L2", 128, 128, 7), ("Mconv6_stage{t}_L2", 128, 128, 1),
           ("Mconv7_stage{t}_L2", 19, 128, 1)],
}


def published_tensors(prefixed: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the body model: as the .pth names them (``conv1_1.weight``),
    or with the module prefix a saved ``state_dict()`` has (``model0.conv1_1.weight``)."""
    layers: list[tuple[str, str, int, int, int]] = [("model0", *layer) for layer in FRONT]
    for branch, block in (("L1", "model1_1"), ("L2", "model1_2")):
        layers += [(block, *layer) for layer in STAGE1[branch]]
    for t in range(2, 7):
        for branch, n in (("L1", 1), ("L2", 2)):
            layers += [(f"model{t}_{n}", name.format(t=t), cout, cin, k) for name, cout, cin, k in LATER[branch]]
    out: dict[str, tuple[int, ...]] = {}
    for block, name, cout, cin, k in layers:
        key = f"{block}.{name}" if prefixed else name
        out[f"{key}.weight"] = (cout, cin, k, k)
        out[f"{key}.bias"] = (cout,)
    return out


@lru_cache(maxsize=2)
def random_tensors(seed: int = 0, prefixed: bool = False) -> dict[str, object]:
    """Random weights of the published shapes (small, so the maps stay finite); shared, so
    copy the dict before changing it."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, object] = {}
    for name, shape in published_tensors(prefixed).items():
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
        tensors[name] = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
    return tensors


def write_body_model(path: Path, seed: int = 0, tensors: dict[str, object] | None = None) -> Path:
    """``tensors`` (random published ones by default) saved as safetensors at ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors if tensors is not None else random_tensors(seed), str(path))  # type: ignore[arg-type]
    return path


# --- the hand and face models ----------------------------------------------------------------

#: (layer, out, in, kernel) of the front the hand and face models share (every one 3x3).
PARTS_FRONT = [
    ("conv1_1", 64, 3), ("conv1_2", 64, 64), ("conv2_1", 128, 64), ("conv2_2", 128, 128),
    ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 512, 256), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3_CPM", 128, 512),
]
HAND_HEATMAPS = 22  # 21 joints and the background
FACE_HEATMAPS = 71  # 70 landmarks and the background


def parts_tensors(heatmaps: int, prefixed: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor of the hand (22 heatmaps) or face (71) model as ``hand_pose_model.pth`` /
    ``facenet.pth`` name them (``conv1_1.weight``), or with the hand module's prefixes
    (``model1_0.conv1_1.weight``, ``model1_1.conv6_2_CPM.weight``, ``model6.Mconv7_stage6.weight``)."""
    layers: list[tuple[str, str, int, int, int]] = [("model1_0", name, cout, cin, 3) for name, cout, cin in PARTS_FRONT]
    layers += [("model1_1", "conv6_1_CPM", 512, 128, 1), ("model1_1", "conv6_2_CPM", heatmaps, 512, 1)]
    for t in range(2, 7):
        block = f"model{t}"
        layers += [(block, f"Mconv1_stage{t}", 128, 128 + heatmaps, 7)]
        layers += [(block, f"Mconv{i}_stage{t}", 128, 128, 7) for i in range(2, 6)]
        layers += [(block, f"Mconv6_stage{t}", 128, 128, 1), (block, f"Mconv7_stage{t}", heatmaps, 128, 1)]
    out: dict[str, tuple[int, ...]] = {}
    for block, name, cout, cin, k in layers:
        key = f"{block}.{name}" if prefixed else name
        out[f"{key}.weight"] = (cout, cin, k, k)
        out[f"{key}.bias"] = (cout,)
    return out


@lru_cache(maxsize=4)
def random_parts_tensors(heatmaps: int, seed: int = 0) -> dict[str, object]:
    """Random weights of the hand or face model's shapes (shared: copy before changing)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, object] = {}
    for name, shape in parts_tensors(heatmaps).items():
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
        tensors[name] = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
    return tensors


def write_hand_model(path: Path, seed: int = 0) -> Path:
    return write_body_model(path, tensors=random_parts_tensors(HAND_HEATMAPS, seed))


def write_face_model(path: Path, seed: int = 0) -> Path:
    return write_body_model(path, tensors=random_parts_tensors(FACE_HEATMAPS, seed))
