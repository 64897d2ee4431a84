"""T2I-Adapters (TencentARC): finding what one is for, loading it, and checking it fits the UNet.

An adapter is a diffusers ``T2IAdapter``: a folder (``config.json`` whose ``_class_name`` is
"T2IAdapter" + ``diffusion_pytorch_model.safetensors``) or one ``.safetensors`` file in the
diffusers layout (keys ``adapter.*``). A single file's config is a ``<name>.json`` beside it
when there is one, else it is read off the tensors (:func:`config_from_header`). Files in
TencentARC's original layout (``conv_in.*``/``body.*`` keys, mostly ``.pth`` pickles) are
recognised and refused with a pointer to the diffusers version. Safetensors only.

The base family comes from ``adapter_type``: "full_adapter_xl" is SDXL, "full_adapter" and
"light_adapter" are SD 1.x/2.x (their configs do not tell 1.x from 2.x). Before a job runs,
:func:`check_fits` compares the adapter's features with what the loaded UNet adds them to.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import read_safetensors_header

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.model_files import SafetensorsHeader

log = logging.getLogger(__name__)

CLASS_NAME = "T2IAdapter"
ADAPTER_TYPES = ("full_adapter", "full_adapter_xl", "light_adapter")
#: Keys that mark each layout's adapter files.
DIFFUSERS_MARKERS = ("adapter.conv_in.weight", "adapter.body.0.in_conv.weight")
ORIGINAL_MARKERS = ("conv_in.weight", "body.0.block1.weight")
ORIGINAL_LAYOUT = ("is a T2I-Adapter in TencentARC's original layout, which HeyIm does not convert; "
                   "use the diffusers version (a folder with config.json, as TencentARC publishes on Hugging Face)")


class IncompatibleAdapter(ModelError):
    """The adapter belongs to another base family, or its features do not fit the UNet."""


def adapter_family(config: dict[str, Any]) -> str:
    """ "sdxl" or "sd" (SD 1.x/2.x) from an adapter config."""
    return "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd"


def family_words(family: str) -> str:
    return "SDXL" if family == "sdxl" else "SD 1.x/2.x"


def _header(path: Path) -> "SafetensorsHeader | None":
    try:
        return read_safetensors_header(path)
    except ModelError:
        return None


def _sidecar(path: Path) -> dict[str, Any] | None:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    data = json.loads(side.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def is_original_layout(path: Path) -> bool:
    """A ``.safetensors`` T2I-Adapter in TencentARC's own (non-diffusers) key layout."""
    header = _header(path) if path.is_file() and path.suffix.lower() == ".safetensors" else None
    return header is not None and all(header.shape(k) is not None for k in ORIGINAL_MARKERS) \
        and header.shape("adapter.conv_in.weight") is None


def is_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a T2I-Adapter (a diffusers folder or a diffusers-layout single file).

    Reads a config or a tensor header only; a path that is not there is not an adapter."""
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            config = path / "config.json"
            return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("_class_name") == CLASS_NAME
        if not path.is_file() or path.suffix.lower() != ".safetensors":
            return False
        side = _sidecar(path)
        if side is not None and "_class_name" in side:
            return bool(side["_class_name"] == CLASS_NAME)
        header = _header(path)
        return header is not None and any(header.shape(k) is not None for k in DIFFUSERS_MARKERS)
    except (OSError, ValueError):
        return False


def config_from_header(header: "SafetensorsHeader") -> dict[str, Any]:
    """A ``T2IAdapter`` config read off a diffusers-layout file's tensor shapes.

    Full adapters start with ``adapter.conv_in`` over the pixel-unshuffled image, whose input
    width is ``in_channels * downscale_factor**2``: 64/192 mean 1/3 channels at 8 (SD), 256/768
    the same at 16 (SDXL's ``full_adapter_xl``). Light adapters (SD) have no ``conv_in``.
    """
    conv_in = header.shape("adapter.conv_in.weight")
    names = list(header.tensors)

    def blocks() -> int:
        return len({n.split(".")[2] for n in names if n.startswith("adapter.body.")})

    def resnets(prefix: str) -> int:
        return len({n[len(prefix):].split(".")[0] for n in names if n.startswith(prefix)})

    if conv_in is not None and len(conv_in) == 4:
        widths = {64: (1, 8), 192: (3, 8), 256: (1, 16), 768: (3, 16)}
        if conv_in[1] not in widths:
            raise ModelError(f"unexpected adapter input width {conv_in[1]}; put the adapter's config.json beside it")
        in_channels, factor = widths[conv_in[1]]
        channels = []
        for i in range(blocks()):
            shape = header.shape(f"adapter.body.{i}.resnets.0.block1.weight")
            if shape is None:
                raise ModelError(f"adapter block {i} has no resnets.0.block1 weights")
            channels.append(int(shape[0]))
        return {"_class_name": CLASS_NAME, "in_channels": in_channels, "channels": channels,
                "num_res_blocks": resnets("adapter.body.0.resnets."), "downscale_factor": factor,
                "adapter_type": "full_adapter_xl" if factor == 16 else "full_adapter"}
    first = header.shape("adapter.body.0.in_conv.weight")
    if first is None or len(first) != 4:
        raise ModelError("no adapter.conv_in or adapter.body.0.in_conv weights")
    n = blocks()
    out_shapes = [header.shape(f"adapter.body.{i}.out_conv.weight") for i in range(n)]
    if any(s is None for s in out_shapes):
        raise ModelError("a light adapter block has no out_conv weights")
    # A light adapter's blocks map channels[i-1] -> channels[i], plus a last block that keeps the width.
    channels = [int(s[0]) for s in out_shapes[:-1] if s is not None]
    in_channels = 1 if first[1] == 64 else 3
    return {"_class_name": CLASS_NAME, "in_channels": in_channels, "channels": channels,
            "num_res_blocks": resnets("adapter.body.0.resnets."), "downscale_factor": 8,
            "adapter_type": "light_adapter"}


def read_config(path: str | Path) -> dict[str, Any]:
    """The adapter's config: its folder's config.json, a ``<name>.json`` beside a file, or its tensors."""
    path = Path(path).expanduser()
    if path.is_dir():
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ModelError(f"{path.name}: config.json is not a JSON object")
        return data
    side = _sidecar(path)
    if side is not None:
        return side
    header = read_safetensors_header(path)
    try:
        return config_from_header(header)
    except ModelError as exc:
        raise ModelError(f"{path.name}: cannot tell this T2I-Adapter's shape ({exc})") from exc


def _weights_file(path: Path) -> Path:
    from heyim_desktop.core.model_files import FileKind, folder_weights, sniff

    if path.is_dir():
        return folder_weights(path)
    if not path.is_file():
        raise ModelError(f"T2I-Adapter not found: {path}")
    if sniff(path) is FileKind.PICKLE:
        raise ModelError(f"{path.name} is a pickle file, which HeyIm never loads; use a .safetensors T2I-Adapter")
    if is_original_layout(path):
        raise ModelError(f"{path.name} {ORIGINAL_LAYOUT}")
    return path


def load_adapter(path: str | Path, *, device: "torch.device", dtype: "torch.dtype") -> Any:
    """A diffusers ``T2IAdapter`` from a folder or a single file, on ``device`` in ``dtype``."""
    from diffusers import T2IAdapter

    path = Path(path).expanduser()
    weights = _weights_file(path)
    try:
        config = read_config(path)
        if config.get("adapter_type", "full_adapter") not in ADAPTER_TYPES:
            raise ModelError(f"T2I-Adapter {path.name} has adapter_type {config.get('adapter_type')!r}; "
                             f"HeyIm runs {', '.join(ADAPTER_TYPES)}")
        if path.is_dir():
            adapter = T2IAdapter.from_pretrained(  # type: ignore[no-untyped-call]
                path, local_files_only=True, use_safetensors=True, dtype=dtype)
        else:
            from safetensors.torch import load_file

            adapter = T2IAdapter.from_config(config)  # type: ignore[no-untyped-call]
            missing, unexpected = adapter.load_state_dict(load_file(str(weights)), strict=False)
            if missing or unexpected:
                raise ModelError(f"{path.name} does not match its T2I-Adapter config "
                                 f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
            adapter = adapter.to(dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelError(f"T2I-Adapter {path.name} could not be loaded: {exc}") from exc
    log.info("loaded T2I-Adapter %s", path)
    return adapter.to(device).eval()


def unet_feature_shapes(unet: Any, height: int, width: int) -> list[tuple[int, int, int]]:
    """(channels, h, w) of each feature the UNet adds (``down_intrablock_additional_residuals``)
    for a ``height x width`` latent, in the order it takes them; the last is the mid block's
    (SDXL adapters give one more feature than the UNet has down blocks).

    A down block with cross-attention adds its feature before its downsampler, one without
    after it, as diffusers' UNet2DConditionModel does."""
    h, w = height, width
    out = []
    for block, channels in zip(unet.down_blocks, unet.config.block_out_channels):
        down = getattr(block, "downsamplers", None) is not None
        if getattr(block, "has_cross_attention", False):
            out.append((int(channels), h, w))
            if down:
                h, w = (h + 1) // 2, (w + 1) // 2
        else:
            if down:
                h, w = (h + 1) // 2, (w + 1) // 2
            out.append((int(channels), h, w))
    out.append((int(unet.config.block_out_channels[-1]), h, w))
    return out


def check_family(config: dict[str, Any], name: str, model_family: str) -> None:
    """Refuse an SDXL adapter on SD 1.x/2.x and the other way round, naming both."""
    theirs = adapter_family(config)
    ours = "sdxl" if model_family.startswith("sdxl") else "sd"
    if theirs != ours:
        raise IncompatibleAdapter(
            f"T2I-Adapter {name} is for {family_words(theirs)} models (adapter_type "
            f"{config.get('adapter_type', 'full_adapter')!r}), but the loaded model is {family_words(ours)}; "
            f"choose a T2I-Adapter for {family_words(ours)}.")


def check_fits(features: "list[torch.Tensor]", name: str, unet: Any, latent_hw: tuple[int, int]) -> None:
    """Refuse an adapter whose features do not match the UNet's (channels, size), before sampling."""
    wanted = unet_feature_shapes(unet, *latent_hw)
    got = [(int(f.shape[1]), int(f.shape[2]), int(f.shape[3])) for f in features]
    # One feature per down block; one more goes to the mid block (SDXL), added only where it fits.
    n = len(wanted) - 1
    if len(got) < n or got[:n] != wanted[:n]:
        def fmt(shapes: list[tuple[int, int, int]]) -> str:
            return ", ".join(f"{c}x{h}x{w}" for c, h, w in shapes)

        raise IncompatibleAdapter(f"T2I-Adapter {name} does not fit this model's UNet: it makes features "
                                  f"{fmt(got)}; the UNet takes {fmt(wanted[:n])} (channels x height x width)")
