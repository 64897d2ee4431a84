"""The OpenPose body network (CMU's 18-keypoint COCO model) as the ControlNet annotators ship it.

The weights are ``body_pose_model.pth`` of the ControlNet annotators, converted by the user to
``body_pose_model.safetensors``; HeyIm reads only the safetensors file, after checking every
tensor name and shape against the architecture below. The file's names are the layers' own
(``conv1_1.weight``, ``Mconv7_stage6_L2.bias``), as the annotator's weights come; names with
the module prefix (``model0.conv1_1.weight``, a saved ``state_dict()``) are read too.

The network: a VGG-19 front (``model0``) to 128 feature channels at 1/8 of the image, a first
stage of two branches (``model1_1`` to 38 part-affinity channels, ``model1_2`` to 19 heatmap
channels), then five refining stages (``model{2..6}_{1,2}``) that each see both branches'
previous output and the features (38 + 19 + 128 = 185 channels) through 7x7 convolutions.
:func:`body_maps` runs it the way the annotator does and brings both maps to the image size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core import openpose_weights
from heyim_desktop.core.openpose_weights import NetworkCache, WeightsLayout

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

log = logging.getLogger(__name__)

WEIGHTS = "body_pose_model.safetensors"
PAF_CHANNELS = 38
HEATMAP_CHANNELS = 19  # 18 parts and the background
FEATURES = 128
STAGES = 6
STRIDE = 8
#: The annotator runs one scale: the image's height brought to BOX_SIZE * SCALE.
BOX_SIZE = 368
SCALE = 0.5
PAD_VALUE = 128

#: (name, in, out, kernel) of the front; "pool" is a 2x2 max-pool.
_FRONT: tuple[tuple[str, int, int, int] | str, ...] = (
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool",
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), "pool",
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), "pool",
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, FEATURES, 3),
)


def _branch(stage: int, branch: int) -> tuple[tuple[str, int, int, int], ...]:
    """The convolutions of branch ``branch`` (1: affinity fields, 2: heatmaps) of ``stage``."""
    out = PAF_CHANNELS if branch == 1 else HEATMAP_CHANNELS
    tag = f"L{branch}"
    if stage == 1:
        return (
            (f"conv5_1_CPM_{tag}", FEATURES, 128, 3), (f"conv5_2_CPM_{tag}", 128, 128, 3),
            (f"conv5_3_CPM_{tag}", 128, 128, 3), (f"conv5_4_CPM_{tag}", 128, 512, 1),
            (f"conv5_5_CPM_{tag}", 512, out, 1),
        )
    width = PAF_CHANNELS + HEATMAP_CHANNELS + FEATURES
    convs = [(f"Mconv1_stage{stage}_{tag}", width, 128, 7)]
    convs += [(f"Mconv{i}_stage{stage}_{tag}", 128, 128, 7) for i in range(2, 6)]
    convs += [(f"Mconv6_stage{stage}_{tag}", 128, 128, 1), (f"Mconv7_stage{stage}_{tag}", 128, out, 1)]
    return tuple(convs)


def _blocks() -> dict[str, tuple[tuple[str, int, int, int] | str, ...]]:
    blocks: dict[str, tuple[tuple[str, int, int, int] | str, ...]] = {"model0": _FRONT}
    for stage in range(1, STAGES + 1):
        for branch in (1, 2):
            blocks[f"model{stage}_{branch}"] = _branch(stage, branch)
    return blocks


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Each tensor of the network by its module name (``model0.conv1_1.weight``) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for block, layers in _blocks().items():
        for layer in layers:
            if isinstance(layer, str):
                continue
            name, cin, cout, k = layer
            shapes[f"{block}.{name}.weight"] = (cout, cin, k, k)
            shapes[f"{block}.{name}.bias"] = (cout,)
    return shapes


def _layout() -> WeightsLayout:
    return WeightsLayout("OpenPose body model", WEIGHTS, "body_pose_model.pth", expected_shapes(), prefixed_ok=True)


def check_weights(path: Path) -> dict[str, str]:
    """Raise ModelError unless ``path`` is the body model in safetensors; the module -> file name map."""
    return openpose_weights.check_weights(path, _layout())


def build_network() -> Any:
    """The body network with fresh weights (a torch module; ``forward`` gives (pafs, heatmaps))."""
    from collections import OrderedDict

    import torch
    from torch import nn

    def sequential(block: str, layers: tuple[tuple[str, int, int, int] | str, ...]) -> nn.Sequential:
        parts: list[tuple[str, nn.Module]] = []
        convs = [layer for layer in layers if not isinstance(layer, str)]
        for i, layer in enumerate(layers):
            if isinstance(layer, str):
                parts.append((f"pool{i}", nn.MaxPool2d(kernel_size=2, stride=2)))
                continue
            name, cin, cout, k = layer
            parts.append((name, nn.Conv2d(cin, cout, k, padding=k // 2)))
            # Each branch ends without a ReLU, except the last heatmap branch: the annotator's
            # network leaves its ReLU in (its list of ReLU-free layers names Mconv7_stage6_L1
            # twice and Mconv7_stage6_L2 never), and its heatmaps are what pose ControlNets know.
            last = layer is convs[-1] and block != "model0"
            if not last or block == f"model{STAGES}_2":
                parts.append((f"relu{i}", nn.ReLU(inplace=True)))
        return nn.Sequential(OrderedDict(parts))

    class BodyPoseNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for block, layers in _blocks().items():
                self.add_module(block, sequential(block, layers))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            blocks: dict[str, nn.Module] = dict(self.named_children())
            features = blocks["model0"](x)
            pafs, heatmaps = blocks["model1_1"](features), blocks["model1_2"](features)
            for stage in range(2, STAGES + 1):
                both = torch.cat([pafs, heatmaps, features], 1)
                pafs, heatmaps = blocks[f"model{stage}_1"](both), blocks[f"model{stage}_2"](both)
            return pafs, heatmaps

    return BodyPoseNetwork()


def load_network(path: Path, device: str = "cpu") -> Any:
    """The network with the weights of ``path`` (safetensors, strictly checked), in eval mode."""
    return openpose_weights.load_checked(path, _layout(), build_network, device)


_cache = NetworkCache(limit=2)


def cached_network(path: Path, device: str = "cpu") -> Any:
    """:func:`load_network`, kept for the next map (a preview's CPU copy and the engine's)."""
    return _cache.get(path, _layout(), device, lambda: load_network(path, device))


def body_maps(bgr: "npt.NDArray[np.uint8]", net: Any, device: str = "cpu") -> tuple["npt.NDArray[Any]", "npt.NDArray[Any]"]:
    """(heatmaps (H, W, 19), affinity fields (H, W, 38)) of a BGR image, at the image's size.

    As the annotator runs it: the image scaled (bicubic) so its height is 368 * 0.5, padded
    right and down to a multiple of 8 with grey 128, fed as x / 256 - 0.5; both outputs
    scaled up 8 times (bicubic), the padding cut off, then scaled to the image's size.
    """
    import cv2
    import numpy as np
    import torch

    height, width = bgr.shape[:2]
    factor = BOX_SIZE * SCALE / height
    scaled = cv2.resize(bgr, (0, 0), fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    sh, sw = scaled.shape[:2]
    pad_h, pad_w = -sh % STRIDE, -sw % STRIDE
    padded = cv2.copyMakeBorder(scaled, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    x = np.ascontiguousarray(padded.astype(np.float32).transpose(2, 0, 1)[None] / 256.0 - 0.5)
    dtype = next(net.parameters()).dtype
    with torch.inference_mode():
        pafs, heatmaps = net(torch.from_numpy(x).to(device=device, dtype=dtype))

    def to_image(out: "torch.Tensor") -> "npt.NDArray[Any]":
        arr = out[0].float().cpu().numpy().transpose(1, 2, 0)
        arr = cv2.resize(arr, (0, 0), fx=STRIDE, fy=STRIDE, interpolation=cv2.INTER_CUBIC)
        arr = arr[:sh, :sw]
        return np.asarray(cv2.resize(arr, (width, height), interpolation=cv2.INTER_CUBIC))

    return to_image(heatmaps), to_image(pafs)


def pose_map(image: "Image.Image", weights: Path, device: str = "cpu") -> "Image.Image":
    """The OpenPose body map of ``image`` (RGB) at its own size, from the model in ``weights``."""
    import numpy as np
    from PIL import Image as PILImage

    from heyim_desktop.core.openpose_decode import decode, draw

    net = cached_network(weights, device)
    # The annotator hands the network BGR pixels (its weights come from Caffe, which reads BGR).
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[:, :, ::-1])
    heatmaps, pafs = body_maps(bgr, net, device)
    people = decode(heatmaps, pafs)
    log.debug("OpenPose found %d people", len(people))
    return PILImage.fromarray(draw(people, image.width, image.height), mode="RGB")
