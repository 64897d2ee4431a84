"""Loading a single-file ``.safetensors`` checkpoint (A1111 / model-site layout) on PyTorch: SD 1.x/2.x and SDXL.

The header is validated and the architecture recognised first (core/checkpoint.py); the
tensors are then read with safetensors (never pickle) and converted by diffusers'
``from_single_file`` against the configs HeyIm ships, with ``local_files_only`` so nothing is
fetched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from heyim_desktop.core.checkpoint import CheckpointArch, UnsupportedModel, detect_architecture, profile_config_dir
from heyim_desktop.core.engine import PipelineEngine
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import read_safetensors_header

log = logging.getLogger(__name__)


def check_single_file(path: Path) -> tuple[str, str]:
    """Validate ``path`` without loading it; return (base, profile). Raises a ModelError subclass."""
    arch = _architecture(path)
    return arch.base, arch.profile


def _architecture(path: Path) -> CheckpointArch:
    if not path.exists():
        raise ModelError(f"Model file not found: {path}")
    header = read_safetensors_header(path)  # refuses a FIFO or device before reading it
    arch = detect_architecture(header, path)
    if not arch.supported:
        raise UnsupportedModel(f"{path.name}: {arch.problem}")
    return arch


def load_single_file_engine(
    path: str | Path, *, device: str = "auto", name: str | None = None, precision: str = "auto"
) -> PipelineEngine:
    file = Path(path).expanduser()
    arch = _architecture(file)
    base, profile = arch.base, arch.profile
    # An inpainting checkpoint is its base model's layout with a 9-channel UNet input.
    unet_args: dict[str, Any] = {"in_channels": 9} if arch.unet_in_channels == 9 else {}
    if base == "SDXL":
        return _load_sdxl(file, profile, device=device, name=name, precision=precision, unet_args=unet_args)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    from heyim_desktop.core.torch_engine import TorchComponents, pick_device, pick_dtype

    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    config = profile_config_dir(profile)
    log.info("loading single-file %s (%s) on %s", file, profile, dev)
    try:
        state: dict[str, Any] = load_file(str(file))
        common: dict[str, Any] = {"config": str(config), "local_files_only": True}
        unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", dtype=dtype, **common, **unet_args)
        vae = AutoencoderKL.from_single_file(state, subfolder="vae", dtype=dtype, **common)
        text_encoder = create_diffusers_clip_model_from_ldm(  # type: ignore[no-untyped-call]
            CLIPTextModel, checkpoint=state, subfolder="text_encoder", torch_dtype=dtype, **common
        )
        del state
        tokenizer = CLIPTokenizer.from_pretrained(config / "tokenizer", local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelError(f"{file.name} could not be loaded: {exc}") from exc
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    components = TorchComponents.from_modules(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler_config=scheduler_config, device=dev, dtype=dtype, source_name=file.stem,
    )
    size = components.sample_size * components.vae_scale_factor
    return PipelineEngine(components, name=f"torch-{dev.type}", model_name=name or file.stem, default_size=(size, size))


def _load_sdxl(
    file: Path, profile: str, *, device: str, name: str | None, precision: str, unet_args: dict[str, Any]
) -> PipelineEngine:
    """An SDXL base or refiner checkpoint: UNet, VAE and both OpenAI/OpenCLIP text encoders converted by diffusers."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from heyim_desktop.core.sdxl import SDXLComponents, vae_dtype
    from heyim_desktop.core.torch_engine import pick_device, pick_dtype

    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    config = profile_config_dir(profile)
    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    refiner = not (config / "text_encoder").is_dir()
    log.info("loading single-file SDXL%s %s (%s) on %s", " refiner" if refiner else "", file, profile, dev)
    try:
        state: dict[str, Any] = load_file(str(file))
        common: dict[str, Any] = {"config": str(config), "local_files_only": True}
        unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", dtype=dtype, **common, **unet_args)
        vae_config = AutoencoderKL.load_config(config / "vae", local_files_only=True)
        vae = AutoencoderKL.from_single_file(state, subfolder="vae", dtype=vae_dtype(dtype, vae_config), **common)
        text_encoder = tokenizer = None
        if not refiner:
            text_encoder = create_diffusers_clip_model_from_ldm(  # type: ignore[no-untyped-call]
                CLIPTextModel, checkpoint=state, subfolder="text_encoder", torch_dtype=dtype, **common
            )
            tokenizer = CLIPTokenizer.from_pretrained(config / "tokenizer", local_files_only=True)
        text_encoder_2 = create_diffusers_clip_model_from_ldm(  # type: ignore[no-untyped-call]
            CLIPTextModelWithProjection, checkpoint=state, subfolder="text_encoder_2", torch_dtype=dtype, **common
        )
        del state
        tokenizer_2 = CLIPTokenizer.from_pretrained(config / "tokenizer_2", local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelError(f"{file.name} could not be loaded: {exc}") from exc
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    components = SDXLComponents.from_sdxl_modules(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, scheduler_config=scheduler_config,
        force_zeros=bool(index.get("force_zeros_for_empty_prompt", True)), device=dev, dtype=dtype, name=file.stem,
    )
    size = components.sample_size * components.vae_scale_factor
    return PipelineEngine(components, name=f"torch-{dev.type}", model_name=name or file.stem, default_size=(size, size))
