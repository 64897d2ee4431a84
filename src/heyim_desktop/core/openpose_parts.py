"""The OpenPose hand and face keypoint networks as the ControlNet annotators ship them.

Both are single-branch convolutional pose machines on one front: a VGG-style stack
(``conv1_1`` ... ``conv5_3_CPM``, 3x3 convolutions, three 2x2 max-pools) to 128 feature
channels at 1/8 of the input, a first stage (``conv6_1_CPM`` 1x1 to 512, ``conv6_2_CPM`` 1x1 to
the heatmaps), then five refining stages (``Mconv1..7_stage{2..6}``) that each see the previous
heatmaps and the features (heatmaps first) through five 7x7 and two 1x1 convolutions. Every
convolution is followed by a ReLU except each stage's last. The networks differ only in their
heatmaps: 22 for the hand (21 joints and the background), 71 for the face (70 landmarks and the
background).

The weights are the annotators' ``hand_pose_model.pth`` and ``facenet.pth``, converted by the
user to ``hand_pose_model.safetensors`` and ``facenet.safetensors``; HeyIm reads only those,
after checking every tensor name and shape. Both files name the layers bare (``conv1_1.weight``,
``Mconv7_stage6.bias``); for the hand model the names with its module prefix
(``model1_0.conv1_1.weight``, ``model6.Mconv7_stage6.bias``: a saved ``state_dict()``) are read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heyim_desktop.core import openpose_weights
from heyim_desktop.core.openpose_weights import NetworkCache, WeightsLayout

FEATURES = 128
STAGES = 6

#: (name, in, out, kernel) of the front; "pool" is a 2x2 max-pool.
_FRONT: tuple[tuple[str, int, int, int] | str, ...] = (
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool",
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), "pool",
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), "pool",
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3),
    ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3), ("conv5_3_CPM", 512, FEATURES, 3),
)


@dataclass(frozen=True)
class PartsModel:
    """One of the two keypoint networks."""

    what: str
    weights: str
    original: str
    heatmaps: int
    #: Whether the file's names may carry the module prefix (the hand model's annotator module has one).
    prefixed_ok: bool


HAND = PartsModel("OpenPose hand model", "hand_pose_model.safetensors", "hand_pose_model.pth", 22, True)
FACE = PartsModel("OpenPose face model", "facenet.safetensors", "facenet.pth", 71, False)


def _blocks(model: PartsModel) -> dict[str, tuple[tuple[str, int, int, int] | str, ...]]:
    """The network's blocks in order, by the module names of the hand model's annotator module."""
    n = model.heatmaps
    blocks: dict[str, tuple[tuple[str, int, int, int] | str, ...]] = {
        "model1_0": _FRONT,
        "model1_1": (("conv6_1_CPM", FEATURES, 512, 1), ("conv6_2_CPM", 512, n, 1)),
    }
    for t in range(2, STAGES + 1):
        convs: list[tuple[str, int, int, int] | str] = [(f"Mconv1_stage{t}", n + FEATURES, 128, 7)]
        convs += [(f"Mconv{i}_stage{t}", 128, 128, 7) for i in range(2, 6)]
        convs += [(f"Mconv6_stage{t}", 128, 128, 1), (f"Mconv7_stage{t}", 128, n, 1)]
        blocks[f"model{t}"] = tuple(convs)
    return blocks


def expected_shapes(model: PartsModel) -> dict[str, tuple[int, ...]]:
    """Each tensor of the network by its module name (``model1_0.conv1_1.weight``) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for block, layers in _blocks(model).items():
        for layer in layers:
            if isinstance(layer, str):
                continue
            name, cin, cout, k = layer
            shapes[f"{block}.{name}.weight"] = (cout, cin, k, k)
            shapes[f"{block}.{name}.bias"] = (cout,)
    return shapes


def _layout(model: PartsModel) -> WeightsLayout:
    return WeightsLayout(model.what, model.weights, model.original, expected_shapes(model), model.prefixed_ok)


def check_weights(path: Path, model: PartsModel) -> dict[str, str]:
    """Raise ModelError unless ``path`` holds ``model`` in safetensors; the module -> file name map."""
    return openpose_weights.check_weights(path, _layout(model))


def build_network(model: PartsModel) -> Any:
    """The network with fresh weights (a torch module; ``forward`` gives the last stage's heatmaps)."""
    from collections import OrderedDict

    import torch
    from torch import nn

    def sequential(layers: tuple[tuple[str, int, int, int] | str, ...]) -> nn.Sequential:
        parts: list[tuple[str, nn.Module]] = []
        last = [layer for layer in layers if not isinstance(layer, str)][-1]
        for i, layer in enumerate(layers):
            if isinstance(layer, str):
                parts.append((f"pool{i}", nn.MaxPool2d(kernel_size=2, stride=2)))
                continue
            name, cin, cout, k = layer
            parts.append((name, nn.Conv2d(cin, cout, k, padding=k // 2)))
            # A stage ends on its heatmaps, without a ReLU; the front ends with one.
            if layer is not last or name.startswith("conv5"):
                parts.append((f"relu{i}", nn.ReLU(inplace=True)))
        return nn.Sequential(OrderedDict(parts))

    class PartsNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for block, layers in _blocks(model).items():
                self.add_module(block, sequential(layers))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            blocks: dict[str, nn.Module] = dict(self.named_children())
            features = blocks["model1_0"](x)
            heatmaps: torch.Tensor = blocks["model1_1"](features)
            for t in range(2, STAGES + 1):
                heatmaps = blocks[f"model{t}"](torch.cat([heatmaps, features], 1))
            return heatmaps

    return PartsNetwork()


def load_network(path: Path, model: PartsModel, device: str = "cpu") -> Any:
    """The network with the weights of ``path`` (safetensors, strictly checked), in eval mode."""
    return openpose_weights.load_checked(path, _layout(model), lambda: build_network(model), device)


_cache = NetworkCache(limit=4)


def cached_network(path: Path, model: PartsModel, device: str = "cpu") -> Any:
    """:func:`load_network`, kept for the next map (two of each kind at most)."""
    return _cache.get(path, _layout(model), device, lambda: load_network(path, model, device))
