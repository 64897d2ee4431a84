"""The PyTorch engine: diffusers' model classes on CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from heyim_desktop.core.engine import PipelineEngine
from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "mps", "cpu")
SUPPORTED_PIPELINES = {
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipelineLegacy",
    "LatentConsistencyModelPipeline",
}
REQUIRED_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU; a named device that is missing is an error."""
    pref = preference.lower()
    if pref not in DEVICES:
        raise ModelError(f"Unknown device {preference!r}; choose one of {', '.join(DEVICES)}.")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelError("No CUDA GPU is available; choose another device.")
        return torch.device("cuda")
    if pref == "mps" or (pref == "auto" and mps_ok):
        if not mps_ok:
            raise ModelError("Apple MPS is not available on this machine; choose another device.")
        return torch.device("mps")
    return torch.device("cpu")


def check_diffusers_folder(folder: Path) -> dict[str, Any]:
    """Validate a diffusers-format folder; return its model_index. Raises ModelError naming what is wrong."""
    if not folder.exists():
        raise ModelError(f"Model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder. Single-file checkpoints are imported through the model library.")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(f"{folder.name} is not a diffusers model: model_index.json is missing.")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder.name}: model_index.json is unreadable ({exc}).") from None
    if not isinstance(index, dict):
        raise ModelError(f"{folder.name}: model_index.json is not a JSON object.")
    kind = index.get("_class_name", "")
    if "XL" in kind:
        raise ModelError(f"{folder.name} is an SDXL model ({kind}); the PyTorch engine runs SD 1.x and 2.x models.")
    if kind not in SUPPORTED_PIPELINES:
        raise ModelError(f"{folder.name} is a {kind or 'unknown'} model; HeyIm runs Stable Diffusion 1.x/2.x models.")
    missing = [part for part in REQUIRED_PARTS if not (folder / part).is_dir()]
    if missing:
        raise ModelError(f"{folder.name} is incomplete: missing {', '.join(missing)}/.")
    for part in ("unet", "vae", "text_encoder"):
        files = list((folder / part).glob("*.safetensors"))
        if not files:
            pickles = [p.name for p in (folder / part).glob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
            if pickles:
                raise ModelError(
                    f"{folder.name}/{part} has only pickle weights ({', '.join(pickles)}), which HeyIm never loads "
                    "because they can run code. Convert the model to .safetensors in the model library."
                )
            raise ModelError(f"{folder.name} is incomplete: {part}/ has no .safetensors weights.")
        if not (folder / part / "config.json").is_file():
            raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing.")
    for name in ("vocab.json", "merges.txt"):
        if not (folder / "tokenizer" / name).is_file():
            raise ModelError(f"{folder.name} is incomplete: tokenizer/{name} is missing.")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelError(f"{folder.name} is incomplete: scheduler/scheduler_config.json is missing.")
    return index


def _has_variant(folder: Path, part: str, variant: str) -> bool:
    return any((folder / part).glob(f"*.{variant}.safetensors"))


class TorchComponents:
    """diffusers UNet and VAE with a transformers CLIP text encoder, behind the loop's contract."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
        import transformers
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.device = device
        self.dtype = dtype
        variant = "fp16" if dtype == torch.float16 and _has_variant(folder, "unet", "fp16") else None
        common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            self.unet_model = UNet2DConditionModel.from_pretrained(
                folder, subfolder="unet", torch_dtype=dtype, variant=variant, **common
            ).to(device).eval()
            self.vae = AutoencoderKL.from_pretrained(
                folder, subfolder="vae", torch_dtype=dtype,
                variant=variant if _has_variant(folder, "vae", "fp16") else None, **common,
            ).to(device).eval()
            te_variant = variant if _has_variant(folder, "text_encoder", "fp16") else None
            self.text_encoder = CLIPTextModel.from_pretrained(
                folder / "text_encoder", variant=te_variant, **{dtype_key: dtype}, **common
            ).to(device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if "out of memory" in str(exc).lower():
                raise
            raise ModelError(f"{folder.name} could not be loaded: {exc}") from exc
        self.scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.unet_model.config.in_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.guidance_embedding_dim = self.unet_model.config.time_cond_proj_dim
        self.sample_size = int(self.unet_model.config.sample_size)
        self._use_attention_mask = bool(getattr(self.text_encoder.config, "use_attention_mask", False))
        self.max_batch = 4 if device.type != "cpu" else 1
        self.fixed_size = None
        self.supports_img2img = True

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask if self._use_attention_mask else None
        return self.text_encoder(input_ids, attention_mask=mask)[0]

    def unet(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.unet_model(
            latents, timestep, encoder_hidden_states=text_embeddings, timestep_cond=timestep_cond, return_dict=False
        )[0]

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]

    def vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.parameters

    def release(self) -> None:
        for attr in ("unet_model", "vae", "text_encoder"):
            if hasattr(self, attr):
                delattr(self, attr)


def load_torch_engine(path: str | Path, *, device: str = "auto", name: str | None = None) -> PipelineEngine:
    """Load a diffusers-format Stable Diffusion folder onto the best (or the named) device."""
    folder = Path(path).expanduser()
    index = check_diffusers_folder(folder)
    dev = pick_device(device)
    dtype = torch.float16 if dev.type in ("cuda", "mps") else torch.float32
    log.info("loading %s on %s (%s)", folder, dev, dtype)
    components = TorchComponents(folder, dev, dtype)
    size = components.sample_size * components.vae_scale_factor
    model_name = name or (
        "HeyIm demo (tiny random model)" if index.get("_heyim_demo") else folder.name
    )
    return PipelineEngine(components, name=f"torch-{dev.type}", model_name=model_name, default_size=(size, size))
