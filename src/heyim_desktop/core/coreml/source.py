"""The diffusers model a conversion starts from: SD 1.x/2.x through the torch engine's loader,
SDXL base through diffusers' classes (safetensors only, never the network)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import ModelError


@dataclass
class SourceParts:
    unet: Any
    vae: Any
    #: [CLIP ViT-L] for SD, [CLIP ViT-L, OpenCLIP bigG with projection] for SDXL, [bigG] for its refiner.
    text_encoders: list[Any]
    #: The tokenizer folder of each text encoder.
    tokenizer_dirs: list[Path]
    scheduler_config: dict[str, Any]
    sample_size: int
    vae_scale_factor: int
    scaling_factor: float
    xl: bool = False
    force_zeros_for_empty_prompt: bool = False
    #: An SDXL refiner: OpenCLIP bigG only, time ids with an aesthetic score.
    refiner: bool = False
    _release: Any = field(default=None, repr=False)

    def release(self) -> None:
        if self._release is not None:
            self._release()


def is_sdxl_folder(folder: Path) -> bool:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(index, dict) and "XL" in str(index.get("_class_name", ""))


def _load_sdxl(folder: Path) -> SourceParts:
    import diffusers
    import torch
    import transformers

    # Untyped third-party loaders, used as plain callables.
    unet_cls: Any = diffusers.UNet2DConditionModel
    vae_cls: Any = diffusers.AutoencoderKL
    te_cls: Any = transformers.CLIPTextModel
    te2_cls: Any = transformers.CLIPTextModelWithProjection

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    # A refiner has the second text encoder only (diffusers writes text_encoder: [null, null]).
    from heyim_desktop.core.model_folder import folder_family

    refiner = folder_family(index) == "sdxl-refiner"
    needed = ["unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"] + ([] if refiner else ["text_encoder", "tokenizer"])
    missing = [p for p in needed if not (folder / p).is_dir()]
    if missing:
        what = "SDXL refiner" if refiner else "SDXL base"
        raise ModelError(f"{folder.name} is incomplete for an {what} conversion: missing {', '.join(p + '/' for p in missing)}.")
    for part in [p for p in needed if p in ("unet", "vae", "text_encoder", "text_encoder_2")]:
        if not list((folder / part).glob("*.safetensors")):
            raise ModelError(f"{folder.name}/{part} has no .safetensors weights; HeyIm never loads pickle weights.")
    common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    try:
        unet = unet_cls.from_pretrained(folder, subfolder="unet", dtype=torch.float32, **common)
        vae = vae_cls.from_pretrained(folder, subfolder="vae", dtype=torch.float32, **common)
        te1 = None if refiner else te_cls.from_pretrained(folder / "text_encoder", dtype=torch.float32, **common)
        te2 = te2_cls.from_pretrained(folder / "text_encoder_2", dtype=torch.float32, **common)
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{folder.name} could not be loaded: {exc}") from exc
    if getattr(unet.config, "addition_embed_type", None) != "text_time":
        raise ModelError(f"{folder.name}: the UNet takes no SDXL time embedding (addition_embed_type is not text_time).")
    return SourceParts(
        unet=unet.eval(), vae=vae.eval(), text_encoders=[te2.eval()] if te1 is None else [te1.eval(), te2.eval()],
        tokenizer_dirs=[folder / "tokenizer_2"] if refiner else [folder / "tokenizer", folder / "tokenizer_2"],
        scheduler_config=scheduler,
        sample_size=int(unet.config.sample_size), vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        scaling_factor=float(vae.config.scaling_factor), xl=True,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", not refiner)), refiner=refiner,
    )


def load_source(folder: Path) -> SourceParts:
    """The diffusers model at ``folder`` in fp32 on the CPU."""
    import torch

    if is_sdxl_folder(folder):
        return _load_sdxl(folder)
    from heyim_desktop.core.model_folder import check_diffusers_folder
    from heyim_desktop.core.torch_engine import TorchComponents

    check_diffusers_folder(folder)
    parts = TorchComponents(folder, torch.device("cpu"), torch.float32)
    return SourceParts(
        unet=parts.unet_model, vae=parts.vae, text_encoders=[parts.text_encoder], tokenizer_dirs=[folder / "tokenizer"],
        scheduler_config=dict(parts.scheduler_config), sample_size=int(parts.sample_size),
        vae_scale_factor=int(parts.vae_scale_factor), scaling_factor=float(parts.scaling_factor), _release=parts.release,
    )


def single_file_as_folder(file: Path, dest: Path) -> Path:
    """A single-file ``.safetensors`` checkpoint (SD 1.x/2.x, SDXL base or refiner) written out as a
    diffusers folder at ``dest`` (fp32, safetensors), through the same loader the torch engine uses,
    so the converter reads it like any folder. ``dest`` must not exist yet; the caller removes it."""
    import shutil

    from heyim_desktop.core.checkpoint import profile_config_dir
    from heyim_desktop.core.single_file import check_single_file, load_single_file_engine

    _base, profile = check_single_file(file)
    config = profile_config_dir(profile)  # the tokenizer files the single file's loader used
    engine = load_single_file_engine(file, device="cpu", precision="fp32")
    comps: Any = engine.components
    try:
        dest.mkdir(parents=True)
        save = {"safe_serialization": True}
        comps.unet_model.save_pretrained(dest / "unet", **save)
        comps.vae.save_pretrained(dest / "vae", **save)
        index: dict[str, Any] = {"_diffusers_version": "0.0", "unet": ["diffusers", "UNet2DConditionModel"],
                                 "vae": ["diffusers", "AutoencoderKL"],
                                 "scheduler": ["diffusers", str(comps.scheduler_config.get("_class_name", "PNDMScheduler"))]}
        xl = hasattr(comps, "text_encoder_2")
        if comps.text_encoder is not None:
            comps.text_encoder.save_pretrained(dest / "text_encoder", **save)
            shutil.copytree(config / "tokenizer", dest / "tokenizer")
            index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
        if xl:
            comps.text_encoder_2.save_pretrained(dest / "text_encoder_2", **save)
            shutil.copytree(config / "tokenizer_2", dest / "tokenizer_2")
            index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                         tokenizer_2=["transformers", "CLIPTokenizer"])
            refiner = comps.text_encoder is None
            index["_class_name"] = "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline"
            index["force_zeros_for_empty_prompt"] = not refiner
            if refiner:
                index["requires_aesthetics_score"] = True
        else:
            index.update(_class_name="StableDiffusionPipeline", safety_checker=[None, None],
                         feature_extractor=[None, None], requires_safety_checker=False)
        (dest / "scheduler").mkdir()
        (dest / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(comps.scheduler_config), indent=2))
        (dest / "model_index.json").write_text(json.dumps(index, indent=2))
    finally:
        engine.close()
    return dest
