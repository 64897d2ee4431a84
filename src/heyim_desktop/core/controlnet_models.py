"""Finding what a ControlNet file is for, and loading it (safetensors only, nothing fetched).

A ControlNet is a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
or one ``.safetensors`` file in the diffusers or the original (lllyasviel / A1111) layout.
A single file's config is a ``<name>.json`` beside it when there is one, else the shipped
config of the base family its tensors show, derived from that family's UNet config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import FileKind, folder_weights, read_safetensors_header, sniff

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Cross-attention width -> base family, and how the window names the family.
FAMILY_BY_CROSS_DIM = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
#: Where the cross-attention width shows in each layout's tensors.
_CROSS_KEYS = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
)
_CONTROLNET_MARKERS = ("controlnet_cond_embedding.conv_in.weight", "control_model.input_hint_block.0.weight",
                       "input_hint_block.0.weight")


class IncompatibleControlNet(ModelError):
    """The ControlNet belongs to another base family than the loaded model."""


def family_label(family: str) -> str:
    return FAMILY_LABELS.get(family, family)


def family_for_cross_dim(dim: int) -> str:
    return FAMILY_BY_CROSS_DIM.get(dim, f"custom ({dim})")


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path.name} is not a ControlNet folder: config.json is missing")
        return folder_weights(path)
    if not path.is_file():
        raise ModelError(f"ControlNet not found: {path}")
    if sniff(path) is FileKind.PICKLE:
        raise ModelError(f"{path.name} is a pickle checkpoint, which HeyIm never loads; use a .safetensors ControlNet")
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path.name}: a ControlNet must be a .safetensors file or a diffusers folder")
    return path


def controlnet_cross_dim(path: Path) -> int | None:
    """The ControlNet's cross-attention width from its config or tensor header (no loading)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        dim = json.loads((path / "config.json").read_text(encoding="utf-8")).get("cross_attention_dim")
        return int(dim) if isinstance(dim, int) else None
    header = read_safetensors_header(_weights_file(path))
    for key in _CROSS_KEYS:
        shape = header.shape(key)
        if shape is not None and len(shape) == 2:
            return int(shape[1])
    return None


def is_controlnet_file(path: Path) -> bool:
    """Whether a .safetensors file holds a ControlNet (by its tensor names)."""
    try:
        header = read_safetensors_header(path)
    except ModelError:
        return False
    return any(header.shape(k) is not None for k in _CONTROLNET_MARKERS)


def _config_from_unet(unet_config: dict[str, Any]) -> dict[str, Any]:
    import inspect

    from diffusers import ControlNetModel

    params = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in unet_config.items() if k in params}
    config.pop("conditioning_channels", None)
    return config


def _shipped_config(family: str) -> dict[str, Any]:
    from importlib import resources

    unet = resources.files("heyim_desktop").joinpath(f"resources/model_configs/{family}/unet/config.json")
    if not unet.is_file():
        raise ModelError(f"HeyIm ships no {family_label(family)} config for single-file ControlNets; "
                         "put the ControlNet's config.json beside it as <name>.json")
    return _config_from_unet(json.loads(unet.read_text(encoding="utf-8")))


def load_controlnet(path: str | Path, *, device: "torch.device", dtype: "torch.dtype") -> Any:
    """A diffusers ``ControlNetModel`` from a folder or a single file, on ``device`` in ``dtype``."""
    from diffusers import ControlNetModel

    path = Path(path).expanduser()
    weights = _weights_file(path)
    try:
        if path.is_dir():
            net = ControlNetModel.from_pretrained(  # type: ignore[no-untyped-call]
                path, local_files_only=True, use_safetensors=True, dtype=dtype)
        else:
            from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
            from safetensors.torch import load_file

            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                config = json.loads(sidecar.read_text(encoding="utf-8"))
            else:
                dim = controlnet_cross_dim(path)
                if dim is None:
                    raise ModelError(f"{path.name} does not look like a ControlNet (no cross-attention weights found)")
                config = _shipped_config(family_for_cross_dim(dim))
            state = convert_controlnet_checkpoint(load_file(str(weights)), config)  # type: ignore[no-untyped-call]
            net = ControlNetModel.from_config(config)  # type: ignore[no-untyped-call]
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelError(f"{path.name} does not match its ControlNet config "
                                 f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
            net = net.to(dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelError(f"ControlNet {path.name} could not be loaded: {exc}") from exc
    log.info("loaded ControlNet %s", path)
    return net.to(device).eval()


def check_compatible(net: Any, name: str, unet_cross_dim: int) -> None:
    """Refuse a ControlNet made for another base family, naming both."""
    dim = int(net.config.cross_attention_dim)
    if dim != unet_cross_dim:
        theirs, ours = family_for_cross_dim(dim), family_for_cross_dim(unet_cross_dim)
        raise IncompatibleControlNet(
            f"ControlNet {name} is for {family_label(theirs)} models (cross-attention width {dim}), "
            f"but the loaded model is {family_label(ours)} ({unet_cross_dim}); choose a ControlNet for {family_label(ours)}."
        )
