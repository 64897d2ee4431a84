"""The PyTorch engine: diffusers' model classes on CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.conditioning import PromptEncoding, TextCond, TokenCount, UNetCall
from heyim_desktop.core.devices import PRECISIONS
from heyim_desktop.core.engine import PipelineEngine
from heyim_desktop.core.errors import DeviceUnavailable, ModelError
from heyim_desktop.core.model_folder import check_diffusers_folder, folder_family
from heyim_desktop.core.prompts import ClipEncoder, PromptCounter, encode_prompt_pair
from heyim_desktop.core.recommended import recommended_for
from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "mps", "cpu")
#: Longest prompt the PyTorch engine reads, in 75-token chunks (600 tokens). AUTOMATIC1111
#: sets no limit; every chunk adds 77 keys to each cross-attention and one text-encoder
#: pass, so a pasted page should not slow every step down unnoticed. Prompts shared with
#: images rarely pass 3 chunks; past 8 the rest is cut with a warning.
MAX_PROMPT_CHUNKS = 8


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU; a named device that is missing is an error."""
    pref = preference.lower()
    if pref not in DEVICES:
        raise ModelError(f"Unknown device {preference!r}; choose one of {', '.join(DEVICES)}.")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceUnavailable("No CUDA GPU is available; choose another device.")
        return torch.device("cuda")
    if pref == "mps" or (pref == "auto" and mps_ok):
        if not mps_ok:
            raise DeviceUnavailable("Apple MPS is not available on this machine; choose another device.")
        return torch.device("mps")
    return torch.device("cpu")


def _has_variant(folder: Path, part: str, variant: str) -> bool:
    return any((folder / part).glob(f"*.{variant}.safetensors"))


class TorchComponents:
    """diffusers UNet and VAE with a transformers CLIP text encoder, behind the loop's contract."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.device = device
        self.dtype = dtype
        self.source_name = folder.name
        variant = "fp16" if dtype == torch.float16 and _has_variant(folder, "unet", "fp16") else None
        common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
        try:
            self.unet_model = UNet2DConditionModel.from_pretrained(
                folder, subfolder="unet", dtype=dtype, variant=variant, **common
            ).to(device).eval()
            self.vae = AutoencoderKL.from_pretrained(
                folder, subfolder="vae", dtype=dtype,
                variant=variant if _has_variant(folder, "vae", "fp16") else None, **common,
            ).to(device).eval()
            te_variant = variant if _has_variant(folder, "text_encoder", "fp16") else None
            self.text_encoder = CLIPTextModel.from_pretrained(
                folder / "text_encoder", variant=te_variant, dtype=dtype, **common
            ).to(device).eval()  # type: ignore[arg-type]  # transformers types .to() narrowly
            self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if "out of memory" in str(exc).lower():
                raise
            raise ModelError(f"{folder.name} could not be loaded: {exc}") from exc
        self._finish(json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8")))

    @classmethod
    def from_modules(
        cls, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler_config: dict[str, Any],
        device: torch.device, dtype: torch.dtype, source_name: str = "",
    ) -> "TorchComponents":
        """Wrap models that are already loaded (single-file checkpoints).

        ``source_name`` (the file's name) lets a known few-step model get its recommended settings.
        """
        self = cls.__new__(cls)
        self.device, self.dtype = device, dtype
        self.source_name = source_name
        self.unet_model = unet.to(device).eval()
        self.vae = vae.to(device).eval()
        self.text_encoder = text_encoder.to(device).eval()
        self.tokenizer = tokenizer
        self._finish(scheduler_config)
        return self

    def _finish(self, scheduler_config: Any) -> None:
        device = self.device
        self.scheduler_config = scheduler_config
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.unet_model.config.in_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.guidance_embedding_dim = self.unet_model.config.time_cond_proj_dim
        self.sample_size = int(self.unet_model.config.sample_size)
        first_encoder = self._text_encoders()[0]
        self._use_attention_mask = bool(getattr(first_encoder.config, "use_attention_mask", False))
        #: The deepest clip skip the text encoders allow (their layer count).
        self.max_clip_skip = min(int(getattr(te.config, "num_hidden_layers", 12)) for te in self._text_encoders())
        size = self.sample_size * self.vae_scale_factor
        self._capabilities = Capabilities(
            family=self._family(),
            img2img=True,
            inpaint="concat" if self.latent_channels == 9 else "blend",
            guidance="embedded" if self.guidance_embedding_dim is not None else "cfg",
            default_size=(size, size),
            max_batch=4 if device.type != "cpu" else 1,
            max_prompt_chunks=MAX_PROMPT_CHUNKS,
            token_window=int(self._first_tokenizer().model_max_length),
            recommended=recommended_for(
                self.source_name, scheduler_config=scheduler_config,
                guidance_embedding=self.guidance_embedding_dim is not None,
            ),
            runtime_lora=self._family() != "sdxl-refiner",
            controlnet=True,
        )
        self._counter = PromptCounter(self._first_tokenizer(), max_chunks=MAX_PROMPT_CHUNKS)
        self._networks: Any = None
        self._controlnets: dict[str, Any] = {}
        # The loop denoises 4-channel latents; an inpainting UNet's extra 5 come from UNetCall.concat.
        self.latent_channels = int(self.vae.config.latent_channels)

    def _family(self) -> str:
        return "sd2" if int(self.unet_model.config.cross_attention_dim or 768) == 1024 else "sd1"

    def _text_encoders(self) -> list[Any]:
        """The loaded text encoders, first to last (SDXL has two; its refiner the second only)."""
        return [self.text_encoder]

    def _first_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, clip_skip: int = 1) -> torch.Tensor:
        """CLIP embeddings; ``clip_skip`` counts as AUTOMATIC1111 does (1: the last layer).

        Skipping takes an earlier layer's hidden states and applies the final layer norm to
        them, as diffusers does for its ``clip_skip`` (which is this value minus one).
        """
        mask = attention_mask if self._use_attention_mask else None
        if clip_skip <= 1:
            return self.text_encoder(input_ids, attention_mask=mask)[0]
        if clip_skip > self.max_clip_skip:
            from heyim_desktop.core.errors import InvalidRequest

            raise InvalidRequest("clip_skip", f"this model's text encoder has {self.max_clip_skip} layers; "
                                              f"clip skip must be at most {self.max_clip_skip}")
        out = self.text_encoder(input_ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[-clip_skip]
        encoder = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 5 flattened it
        return encoder.final_layer_norm(hidden)

    def _clip_encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The text encoder as a prompts.ClipEncoder sees it (no clip skip, no pooled output)."""
        return self.encode_text(input_ids, attention_mask), None

    def encode_prompts(self, request: GenerationRequest, *, with_negative: bool) -> PromptEncoding:
        def clip_encode(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.encode_text(input_ids, attention_mask, clip_skip=request.clip_skip), None

        return encode_prompt_pair(
            request, encoders=(ClipEncoder(self.tokenizer, clip_encode),), with_negative=with_negative,
            device=self.device, dtype=self.dtype, max_chunks=self._capabilities.max_prompt_chunks,
        )

    def count_tokens(self, text: str) -> TokenCount:
        return self._counter(text)

    def prepare_networks(self, request: GenerationRequest) -> GenerationRequest:
        """Apply the job's LoRAs and embeddings (unloading any it does not use)."""
        if self._networks is None:
            if not request.loras and not request.embeddings:
                from heyim_desktop.core.lora import strip_lora_tags
                from heyim_desktop.core.lora_torch import with_prompts

                return with_prompts(request, strip_lora_tags(request.prompt)[0], strip_lora_tags(request.negative_prompt)[0])
            from heyim_desktop.core.lora_torch import NetworkPatcher

            if not self._capabilities.runtime_lora:  # an SDXL refiner: LoRAs apply to the base model
                raise ModelError("LoRAs and embeddings apply to the base model; an SDXL refiner takes neither.")
            self._networks = NetworkPatcher(
                unet=self.unet_model, vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                family=self._capabilities.family, text_encoder_2=getattr(self, "text_encoder_2", None),
                tokenizer_2=getattr(self, "tokenizer_2", None),
            )
        return self._networks.prepare(request)

    def unet(self, call: UNetCall) -> torch.Tensor:
        sample = call.sample if call.concat is None else torch.cat([call.sample, call.concat], dim=1)
        kwargs: dict[str, Any] = {}
        if call.down_residuals is not None:
            kwargs["down_block_additional_residuals"] = call.down_residuals
        if call.mid_residual is not None:
            kwargs["mid_block_additional_residual"] = call.mid_residual
        if call.intrablock_residuals is not None:  # the UNet pops from this list: hand it a copy
            kwargs["down_intrablock_additional_residuals"] = list(call.intrablock_residuals)
        added = self._added_cond(call)
        if added is not None:
            kwargs["added_cond_kwargs"] = added
        return self.unet_model(
            sample, call.timestep, encoder_hidden_states=call.text.hidden, timestep_cond=call.timestep_cond,
            return_dict=False, **kwargs,
        )[0]

    def controlnet_model(self, path: str) -> Any:
        """The ControlNet at ``path``, loaded once onto this device and dtype and kept."""
        from heyim_desktop.core.controlnet_models import check_compatible, load_controlnet

        key = str(Path(path).expanduser().resolve())
        net = self._controlnets.get(key)
        if net is None:
            net = load_controlnet(key, device=self.device, dtype=self.dtype)
            check_compatible(net, Path(key).name, int(self.unet_model.config.cross_attention_dim))
            self._controlnets[key] = net
        return net

    def adapter_model(self, path: str) -> Any:
        """The T2I-Adapter at ``path``, loaded once onto this device and dtype and kept (family checked)."""
        from heyim_desktop.core.t2i_adapter import check_family, load_adapter

        key = str(Path(path).expanduser().resolve())
        adapter = self._controlnets.get(key)
        if adapter is None:
            adapter = load_adapter(key, device=self.device, dtype=self.dtype)
            check_family(dict(adapter.config), Path(key).name, self._capabilities.family)
            self._controlnets[key] = adapter
        return adapter

    def adapter_features(self, adapter: Any, image: torch.Tensor, latent_hw: tuple[int, int], name: str) -> list[torch.Tensor]:
        """The adapter's features for a control image, checked against this UNet's down blocks."""
        from heyim_desktop.core.t2i_adapter import check_fits

        features = list(adapter(image))
        check_fits(features, name, self.unet_model, latent_hw)
        return features

    def run_controlnet(
        self, net: Any, sample: torch.Tensor, timestep: torch.Tensor, text: TextCond, image: torch.Tensor, *,
        scale: float, guess_mode: bool,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        added = self._added_cond(UNetCall(sample, timestep, text))  # SDXL: pooled text and time ids
        down, mid = net(
            sample, timestep, encoder_hidden_states=text.hidden, controlnet_cond=image, conditioning_scale=scale,
            guess_mode=guess_mode, added_cond_kwargs=added, return_dict=False,
        )
        return list(down), mid

    def _added_cond(self, call: UNetCall) -> dict[str, torch.Tensor] | None:
        """The UNet's extra inputs beyond the text (SDXL: pooled text and time ids); none for SD 1.x/2.x."""
        return None

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]

    def vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.parameters

    def release(self) -> None:
        self._controlnets = {}
        for attr in ("unet_model", "vae", "text_encoder", "text_encoder_2"):
            if hasattr(self, attr):
                delattr(self, attr)


def cuda_bf16_native() -> bool:
    """Whether the CUDA GPU computes bf16 in hardware (Ampere and later); older ones only emulate it."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def check_bf16(device: torch.device) -> None:
    """Raise a plain-words ModelError when ``device`` cannot compute in bf16."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ModelError("This GPU has no bf16 support; choose fp16 or automatic precision.")
        if not cuda_bf16_native():
            log.warning("this GPU only emulates bf16 (before NVIDIA Ampere): it works, more slowly than fp16")
    if device.type == "mps":
        try:  # MPS has bf16 from macOS 14 on
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError) as exc:
            raise ModelError("bf16 needs macOS 14 or later on this Mac; choose automatic precision.") from exc


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp16 on a GPU, fp32 on the CPU, unless ``precision`` names one (bf16 works on the CPU too:
    half the memory of fp32, fast on CPUs with bf16 instructions)."""
    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "fp16" and device.type == "cpu":
        raise ModelError("fp16 is not supported on the CPU; use bf16, fp32 or automatic.")
    if precision == "bf16":
        check_bf16(device)
        return torch.bfloat16
    half = precision == "fp16" or (precision == "auto" and device.type in ("cuda", "mps"))
    return torch.float16 if half else torch.float32


def load_torch_engine(
    path: str | Path, *, device: str = "auto", name: str | None = None, precision: str = "auto"
) -> PipelineEngine:
    """Load a diffusers-format Stable Diffusion (1.x, 2.x, SDXL) folder onto the best (or the named) device.

    ``precision`` "auto" is fp16 on a GPU and fp32 on the CPU; "fp32" on a GPU avoids the
    black or NaN images some cards give in fp16.
    """
    folder = Path(path).expanduser()
    index = check_diffusers_folder(folder)
    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    log.info("loading %s on %s (%s)", folder, dev, dtype)
    components: TorchComponents
    if folder_family(index) == "sd":
        components = TorchComponents(folder, dev, dtype)
        demo_name = "HeyIm demo (tiny random model)"
    else:
        from heyim_desktop.core.sdxl import SDXLComponents

        components = SDXLComponents(folder, dev, dtype, index)
        demo_name = folder.name
    size = components.sample_size * components.vae_scale_factor
    model_name = name or (demo_name if index.get("_heyim_demo") else folder.name)
    return PipelineEngine(components, name=f"torch-{dev.type}", model_name=model_name, default_size=(size, size))
