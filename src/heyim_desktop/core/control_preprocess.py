"""ControlNet preprocessors that need no network of their own, and control-image fitting.

A preprocessor turns a photo into the map a ControlNet was trained on (edges, scribbles, a
blurred tile, a shuffled image); "none" takes the image as a map made elsewhere (depth,
pose, normals). Module names and their two sliders follow the AUTOMATIC1111 ControlNet
extension, so its API clients and infotext work unchanged. Every image operation is
OpenCV's or Pillow's. Preprocessors that need weights are listed by
:func:`network_preprocessors` with what would enable them, and run (each by its entry in
``_NETWORK_RUNNERS``) when that is in a ControlNet annotator folder: the depth ones
(:mod:`heyim_desktop.core.depth_preprocess`), the OpenPose family
(:mod:`heyim_desktop.core.openpose_body`, :mod:`heyim_desktop.core.openpose_extras`) and
``inpaint_only+lama`` (:mod:`heyim_desktop.core.lama_preprocess`, which also needs the request's mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from heyim_desktop.core.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

#: How a control image of another shape is brought to the generation size (the extension's names).
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
DEFAULT_RESIZE_MODE = "Crop and Resize"
#: Short side the image is scaled to before a detector runs, when the request does not say.
DEFAULT_PROCESSOR_RES = 512


@dataclass(frozen=True)
class Slider:
    """One preprocessor parameter, as the extension's ``threshold_a`` / ``threshold_b``."""

    label: str
    default: float
    minimum: float
    maximum: float
    step: float = 1.0

    def clamp(self, value: float) -> float:
        # The extension resets out-of-range values (and -1, "unset") to the default.
        return self.default if not self.minimum <= value <= self.maximum else float(value)


@dataclass(frozen=True)
class Preprocessor:
    name: str
    label: str
    #: The extension's control-type tag ("Canny", "Scribble", ...).
    control_type: str
    slider_a: Slider | None = None
    slider_b: Slider | None = None
    #: Whether ``processor_res`` applies (detectors run at a chosen resolution).
    uses_resolution: bool = True
    #: Needs the request's inpainting mask.
    needs_mask: bool = False


_PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", "None (the image is already a control map)", "All", uses_resolution=False),
    Preprocessor("canny", "Canny edges", "Canny",
                 Slider("Canny Low Threshold", 100, 1, 255), Slider("Canny High Threshold", 200, 1, 255)),
    Preprocessor("scribble_xdog", "Scribble (difference of Gaussians)", "Scribble", Slider("XDoG Threshold", 32, 1, 64)),
    Preprocessor("scribble_adaptive", "Scribble (adaptive threshold)", "Scribble",
                 Slider("Block Size", 15, 3, 101, 2), Slider("Offset", 6, 0, 64)),
    Preprocessor("scribble_canny", "Scribble (thick Canny edges)", "Scribble",
                 Slider("Canny Low Threshold", 100, 1, 255), Slider("Canny High Threshold", 200, 1, 255)),
    Preprocessor("lineart_standard", "Line art (from a white background)", "Lineart"),
    Preprocessor("threshold", "Binary threshold", "Scribble", Slider("Binarization Threshold", 127, 0, 255)),
    Preprocessor("invert", "Invert (black lines on white -> white on black)", "Lineart", uses_resolution=False),
    Preprocessor("tile_resample", "Tile (downscale)", "Tile", Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),
                 uses_resolution=False),
    Preprocessor("blur_gaussian", "Tile (Gaussian blur)", "Tile", Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
    Preprocessor("inpaint", "Inpaint (masked pixels = -1)", "Inpaint", uses_resolution=False, needs_mask=True),
    Preprocessor("shuffle", "Shuffle (content warp)", "Shuffle"),
    Preprocessor("recolor_luminance", "Recolor (luminance)", "Recolor", Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001),
                 uses_resolution=False),
    Preprocessor("recolor_intensity", "Recolor (intensity)", "Recolor", Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001),
                 uses_resolution=False),
    Preprocessor("t2ia_color_grid", "Colour grid (64 px cells)", "T2I-Adapter"),
)
PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in _PREPROCESSORS}
#: Names other tools use for the same preprocessor.
#: "inpaint_only" makes the same map as "inpaint"; what it adds in the extension, keeping the
#: unmasked pixels, HeyIm's inpainting does for every inpainting request (its paste-back).
ALIASES = {"inpaint_global_harmonious": "inpaint", "inpaint_only": "inpaint", "canny_edge": "canny",
           "tile": "tile_resample", "depth": "depth_midas"}

#: Preprocessors that run a network from the library's annotator folder (the unit names its folder).
NETWORK_SPECS: dict[str, Preprocessor] = {
    "depth_midas": Preprocessor("depth_midas", "Depth (MiDaS / DPT)", "Depth"),
    "depth_anything_v2": Preprocessor("depth_anything_v2", "Depth Anything V2", "Depth"),
    "openpose": Preprocessor("openpose", "OpenPose (body)", "OpenPose"),
    "openpose_hand": Preprocessor("openpose_hand", "OpenPose (body and hands)", "OpenPose"),
    "openpose_face": Preprocessor("openpose_face", "OpenPose (body and face)", "OpenPose"),
    "openpose_faceonly": Preprocessor("openpose_faceonly", "OpenPose (face only)", "OpenPose"),
    "openpose_full": Preprocessor("openpose_full", "OpenPose (body, hands and face)", "OpenPose"),
    "inpaint_only+lama": Preprocessor("inpaint_only+lama", "Inpaint only + LaMa", "Inpaint", uses_resolution=False,
                                      needs_mask=True),
}
#: The network preprocessor that fills the mask with LaMa (its map needs the mask).
LAMA = "inpaint_only+lama"
#: The weights files each OpenPose preprocessor needs, side by side in one annotator folder (the
#: body model first: the hands and the face are looked for around the body's keypoints).
OPENPOSE_FILES: dict[str, tuple[str, ...]] = {
    "openpose": ("body_pose_model.safetensors",),
    "openpose_hand": ("body_pose_model.safetensors", "hand_pose_model.safetensors"),
    "openpose_face": ("body_pose_model.safetensors", "facenet.safetensors"),
    "openpose_faceonly": ("body_pose_model.safetensors", "facenet.safetensors"),
    "openpose_full": ("body_pose_model.safetensors", "hand_pose_model.safetensors", "facenet.safetensors"),
}
#: The preprocessors whose input is prepared as the extension prepares it (its resize-with-pad):
#: short side to the resolution (cubic when enlarging, area when shrinking), edges repeated
#: right and down to a multiple of 64, the map cut back to the unpadded size.
PADDED_TO_64 = frozenset(OPENPOSE_FILES)


def spec(name: str) -> Preprocessor:
    """The preprocessor called ``name`` (already canonical), model-free or network."""
    return PREPROCESSORS.get(name) or NETWORK_SPECS[name]


@dataclass(frozen=True)
class NetworkPreprocessor:
    """A preprocessor that needs its own network: offered when its weights are in the library."""

    name: str
    label: str
    control_type: str
    #: What (in a ControlNet annotator folder) enables it: a file name, or for the depth ones a
    #: description of the transformers folder.
    weights: str
    #: Whether HeyIm runs it; the others are listed so users know what they would need.
    runs: bool = False


def _files_text(files: tuple[str, ...]) -> str:
    if len(files) == 1:
        return files[0]
    return f"{', '.join(files[:-1])} and {files[-1]} side by side"


NETWORK_PREPROCESSORS = (
    NetworkPreprocessor("depth_midas", "Depth (MiDaS / DPT)", "Depth",
                        "a transformers DPT depth model folder (config.json, model.safetensors, "
                        "preprocessor_config.json; e.g. Intel/dpt-hybrid-midas)", runs=True),
    NetworkPreprocessor("depth_anything_v2", "Depth Anything V2", "Depth",
                        "a transformers Depth Anything folder (config.json, model.safetensors, "
                        "preprocessor_config.json; e.g. depth-anything/Depth-Anything-V2-Small-hf)", runs=True),
    *(NetworkPreprocessor(name, NETWORK_SPECS[name].label, "OpenPose", _files_text(files), runs=True)
      for name, files in OPENPOSE_FILES.items()),
    NetworkPreprocessor("inpaint_only+lama", "Inpaint only + LaMa", "Inpaint",
                        "a LaMa model as .safetensors (ControlNetLama.safetensors or big-lama.safetensors, "
                        "converted from the .pth)", runs=True),
)


def canonical(name: str) -> str:
    """The preprocessor's own name for ``name``; unknown names raise InvalidRequest."""
    key = (name or "none").strip()
    key = ALIASES.get(key, key)
    if key not in PREPROCESSORS and key not in NETWORK_SPECS:
        known = ", ".join(PREPROCESSORS)
        net = {p.name: p for p in NETWORK_PREPROCESSORS}.get(key)
        if net is not None:
            raise InvalidRequest("controlnet.module", f"{net.label} needs its own network ({net.weights}), which "
                                 f"HeyIm does not run yet; make the map elsewhere and use 'none'. Available: {known}")
        raise InvalidRequest("controlnet.module", f"unknown preprocessor {name!r}; choose one of {known}")
    return key


@dataclass(frozen=True)
class _NetworkRunner:
    #: What among the annotator folders' files enables it (a model folder or a weights file).
    find: Callable[[list[Path], str], Path | None]
    #: (image, what ``find`` found, module name, device) -> the control map at the image's size.
    run: Callable[["Image.Image", Path, str, str], "Image.Image"]


def _depth_folder(files: list[Path], name: str) -> Path | None:
    from heyim_desktop.core.depth_preprocess import usable

    folders = sorted({p.parent for p in files if p.name == "config.json"})
    return next((f for f in folders if usable(f, name)), None)


def _depth(image: "Image.Image", folder: Path, name: str, device: str) -> "Image.Image":
    from heyim_desktop.core.depth_preprocess import depth_map

    return depth_map(image, folder, name, device)


def _weights_file(files: list[Path], name: str) -> Path | None:
    """The first file named as the preprocessor's weights (their content is checked when they load)."""
    wanted = {p.name: p.weights for p in NETWORK_PREPROCESSORS}[name]
    return next((f for f in sorted(files) if f.name == wanted), None)


def _openpose_files(files: list[Path], name: str) -> Path | None:
    """The first body model whose folder also holds the other files ``name`` needs."""
    body, *others = OPENPOSE_FILES[name]
    present = {(f.parent, f.name) for f in files}
    return next((f for f in sorted(files) if f.name == body and all((f.parent, o) in present for o in others)), None)


def _openpose(image: "Image.Image", weights: Path, name: str, device: str) -> "Image.Image":
    from heyim_desktop.core.openpose_extras import pose_map

    files = OPENPOSE_FILES[name]
    hand = weights.parent / "hand_pose_model.safetensors" if "hand_pose_model.safetensors" in files else None
    face = weights.parent / "facenet.safetensors" if "facenet.safetensors" in files else None
    return pose_map(image, weights, device, hand_weights=hand, face_weights=face, draw_body=name != "openpose_faceonly")


def _lama_file(files: list[Path], name: str) -> Path | None:
    from heyim_desktop.core.lama_preprocess import find_weights

    return find_weights(files)


def _lama_unmasked(image: "Image.Image", weights: Path, name: str, device: str) -> "Image.Image":
    # Without a mask LaMa has nothing to fill (the panel's preview): the picture as it is. With
    # one, :func:`detect` and :func:`control_array` call heyim_desktop.core.lama_preprocess.
    return image


#: How each network preprocessor HeyIm runs finds its model and makes its map.
_NETWORK_RUNNERS: dict[str, _NetworkRunner] = {
    "depth_midas": _NetworkRunner(_depth_folder, _depth),
    "depth_anything_v2": _NetworkRunner(_depth_folder, _depth),
    **{name: _NetworkRunner(_openpose_files, _openpose) for name in OPENPOSE_FILES},
    LAMA: _NetworkRunner(_lama_file, _lama_unmasked),
}


def network_preprocessors(library_files: Iterable[Path]) -> list[tuple[NetworkPreprocessor, bool]]:
    """Each network preprocessor and whether what enables it is among ``library_files`` (the
    annotator folders' files): a usable depth model folder, or the named weights file."""
    files = list(library_files)
    names = {p.name for p in files}
    out = []
    for p in NETWORK_PREPROCESSORS:
        runner = _NETWORK_RUNNERS.get(p.name)
        out.append((p, runner.find(files, p.name) is not None if runner else p.weights in names))
    return out


def annotator_folder(library_files: Iterable[Path], name: str) -> Path | None:
    """What network preprocessor ``name`` runs among ``library_files``: the first usable model
    folder (depth) or weights file (the OpenPose ones: the body model, the others beside it; LaMa);
    None when there is none."""
    runner = _NETWORK_RUNNERS.get(name)
    return runner.find(list(library_files), name) if runner else None


def network_hint(name: str) -> str:
    """What to put where to enable network preprocessor ``name``."""
    net = {p.name: p for p in NETWORK_PREPROCESSORS}[name]
    return f"{net.label} needs {net.weights} in a ControlNet folder's annotator subfolder (models/ControlNet/annotator)"


def fit_control_image(image: "Image.Image", width: int, height: int, resize_mode: str) -> "Image.Image":
    """The image at ``width x height`` the way ``resize_mode`` says (Lanczos, as diffusers resizes)."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    if image.size == (width, height):
        return image
    lanczos = PILImage.Resampling.LANCZOS
    if resize_mode == "Just Resize":
        return image.resize((width, height), resample=lanczos)
    if resize_mode == "Resize and Fill":
        return ImageOps.pad(image, (width, height), method=lanczos, color=(0, 0, 0), centering=(0.5, 0.5))
    return ImageOps.fit(image, (width, height), method=lanczos, centering=(0.5, 0.5))


def _scale_short_side(image: "Image.Image", short: int) -> "Image.Image":
    from PIL import Image as PILImage

    w, h = image.size
    k = short / min(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return image if size == (w, h) else image.resize(size, resample=PILImage.Resampling.LANCZOS)


def _resize_with_pad(image: "Image.Image", short: int) -> "tuple[Image.Image, tuple[int, int]]":
    """The extension's resize-with-pad: the image with its short side at ``short`` (cubic when
    enlarging, area otherwise), its last row and column repeated to a multiple of 64; and the
    (width, height) to cut the map back to."""
    import cv2
    import numpy as np
    from PIL import Image as PILImage

    arr = np.asarray(image, dtype=np.uint8)
    h, w = arr.shape[:2]
    k = short / min(h, w)
    th, tw = max(1, int(np.round(h * k))), max(1, int(np.round(w * k)))
    scaled = cv2.resize(arr, (tw, th), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    padded = np.pad(scaled, ((0, -th % 64), (0, -tw % 64), (0, 0)), mode="edge")
    return PILImage.fromarray(np.ascontiguousarray(padded), mode="RGB"), (tw, th)


def _gray3(single: "npt.NDArray[Any]") -> "npt.NDArray[Any]":
    import numpy as np

    return np.repeat(single[:, :, None], 3, axis=2)


def _canny(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2

    return _gray3(cv2.Canny(img, int(a), int(b)))


def _scribble_canny(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2
    import numpy as np

    edges = cv2.Canny(img, int(a), int(b))
    return _gray3(cv2.dilate(edges, np.ones((3, 3), np.uint8), iterations=1))


def _scribble_xdog(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2
    import numpy as np

    x = img.astype(np.float32)
    fine = cv2.GaussianBlur(x, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(x, (0, 0), 5.0)
    # Lines are where the sharp image is darker than its blurred surroundings.
    out = np.zeros(img.shape[:2], np.uint8)
    out[np.max(coarse - fine, axis=2) * 2.0 > a] = 255
    return _gray3(out)


def _scribble_adaptive(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2

    block = int(a) | 1  # odd, as OpenCV requires
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    lines = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, max(3, block), b)
    return _gray3(lines)


def _lineart_standard(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2
    import numpy as np

    x = img.astype(np.float32)
    dark = np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    strong = dark[dark > 8]
    norm = max(16.0, float(np.median(strong))) if strong.size else 16.0
    return _gray3((dark / norm * 127.0).clip(0, 255).astype(np.uint8))


def _threshold(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return _gray3(cv2.threshold(gray, a, 255, cv2.THRESH_BINARY)[1])


def _invert(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    return 255 - img


def _tile_resample(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2

    if a <= 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, int(w / a)), max(1, int(h / a))), interpolation=cv2.INTER_AREA)


def _blur_gaussian(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    import cv2

    return cv2.GaussianBlur(img, (0, 0), a)


def _shuffle(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    """Warp the picture by a smooth random flow, keeping colours and textures but not layout."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    rng = np.random.default_rng(seed)
    cell = 256

    def field(extent: int) -> "npt.NDArray[Any]":
        coarse = rng.uniform(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
        fine = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[cell:cell + h, cell:cell + w]
        fine = (fine - fine.min()) / max(float(fine.max() - fine.min()), 1e-6)
        return np.asarray(fine * float(extent - 1), dtype=np.float32)

    map_x, map_y = field(w), field(h)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR)


def _recolor(channel_of: Callable[["npt.NDArray[Any]"], "npt.NDArray[Any]"]) -> Callable[..., "npt.NDArray[Any]"]:
    def run(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
        import numpy as np

        level = channel_of(img).astype(np.float32) / 255.0
        return _gray3((np.power(level, a) * 255.0).clip(0, 255).astype(np.uint8))

    return run


def _lab_lightness(img: "npt.NDArray[Any]") -> "npt.NDArray[Any]":
    import cv2

    # The extension hands its RGB pixels to OpenCV's BGR conversion; done the same way here so
    # the maps (and so the images) match what its users get.
    return cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[:, :, 0]


def _hsv_value(img: "npt.NDArray[Any]") -> "npt.NDArray[Any]":
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[:, :, 2]


def _color_grid(img: "npt.NDArray[Any]", a: float, b: float, seed: int) -> "npt.NDArray[Any]":
    """The picture's colours in 64-pixel cells (T2I-Adapter's colour input)."""
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // 64), max(1, h // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


_RUNNERS: dict[str, Callable[["npt.NDArray[Any]", float, float, int], "npt.NDArray[Any]"]] = {
    "canny": _canny, "scribble_canny": _scribble_canny, "scribble_xdog": _scribble_xdog,
    "scribble_adaptive": _scribble_adaptive, "lineart_standard": _lineart_standard, "threshold": _threshold,
    "invert": _invert, "tile_resample": _tile_resample, "blur_gaussian": _blur_gaussian, "shuffle": _shuffle,
    "recolor_luminance": _recolor(_lab_lightness), "recolor_intensity": _recolor(_hsv_value),
    "t2ia_color_grid": _color_grid,
}


def detect(
    image: "Image.Image", module: str, *, processor_res: int = -1, threshold_a: float = -1, threshold_b: float = -1,
    seed: int = 0, annotator: str | Path = "", device: str = "cpu", mask: "npt.NDArray[np.float32] | None" = None,
) -> "Image.Image":
    """The control map ``module`` makes from ``image`` (RGB), at the detector's resolution.

    "none" and "inpaint" hand the image back unchanged (inpaint's -1 pixels are set where
    the mask is known, in :func:`control_array`). The network preprocessors run the model at
    ``annotator`` (a folder or file the library found) on ``device``; "inpaint_only+lama" fills
    ``mask`` (H, W, 0..1, at the image's size) with LaMa, or without a mask hands the image back.
    """
    import numpy as np
    from PIL import Image as PILImage

    from heyim_desktop.core.images import to_rgb

    found = spec(canonical(module))
    if image.width < 1 or image.height < 1:
        raise InvalidRequest("controlnet.image", "the control image has no pixels")
    rgb = to_rgb(image)
    network = found.name in NETWORK_SPECS
    runner = _RUNNERS.get(found.name)
    if runner is None and not network:
        return rgb
    keep: tuple[int, int] | None = None
    if found.uses_resolution:
        res = processor_res if processor_res and processor_res > 0 else DEFAULT_PROCESSOR_RES
        if not 64 <= res <= 2048:
            raise InvalidRequest("controlnet.processor_res", f"must be from 64 to 2048, got {res}")
        if found.name in PADDED_TO_64:
            rgb, keep = _resize_with_pad(rgb, res)
        else:
            rgb = _scale_short_side(rgb, res)
    if network:
        if not annotator:
            raise InvalidRequest("controlnet.module", network_hint(found.name))
        if found.name == LAMA and mask is not None:
            from heyim_desktop.core.lama_preprocess import lama_fill

            filled = lama_fill(np.asarray(rgb, dtype=np.uint8), np.asarray(mask, np.float32), annotator, device)
            return PILImage.fromarray(filled, mode="RGB")
        made = _NETWORK_RUNNERS[found.name].run(rgb, Path(annotator), found.name, device)
        return made.crop((0, 0, *keep)) if keep is not None else made
    assert runner is not None
    a = found.slider_a.clamp(threshold_a) if found.slider_a else 0.0
    b = found.slider_b.clamp(threshold_b) if found.slider_b else 0.0
    out = runner(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), a, b, seed)
    return PILImage.fromarray(np.ascontiguousarray(out), mode="RGB")


def control_array(
    image: "Image.Image", module: str, width: int, height: int, *, resize_mode: str = DEFAULT_RESIZE_MODE,
    processor_res: int = -1, threshold_a: float = -1, threshold_b: float = -1, seed: int = 0,
    mask: "npt.NDArray[np.float32] | None" = None, annotator: str | Path = "", device: str = "cpu",
) -> "npt.NDArray[np.float32]":
    """(H, W, 3) float32 for the ControlNet: [0, 1] as diffusers' control image processor
    makes it (RGB, resized to the generation size), or -1 under the mask for "inpaint"
    (the extension's inpaint protocol). ``mask`` (H, W) in [0, 1] is the request's."""
    import numpy as np

    name = canonical(module)
    if resize_mode not in RESIZE_MODES:
        raise InvalidRequest("controlnet.resize_mode", f"must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    if name == LAMA:
        from heyim_desktop.core.lama_preprocess import control_map as lama_map

        if not annotator:
            raise InvalidRequest("controlnet.module", network_hint(name))
        return lama_map(image, width, height, resize_mode, mask, annotator, device)
    control_map = detect(image, name, processor_res=processor_res, threshold_a=threshold_a,
                         threshold_b=threshold_b, seed=seed, annotator=annotator, device=device)
    fitted = fit_control_image(control_map, width, height, resize_mode)
    arr = np.asarray(fitted, dtype=np.float32) / 255.0
    if spec(name).needs_mask:
        if mask is None:
            raise InvalidRequest("controlnet.module", "the inpaint preprocessor needs an inpainting mask on the request")
        arr = arr.copy()
        arr[mask > 0.5] = -1.0
    return np.ascontiguousarray(arr)
