"""SDXL on the PyTorch engine: two text encoders, pooled text and time ids, an fp32-safe VAE.

Everything SDXL needs beyond SD 1.x/2.x lives in these components; the shared loop runs
them unchanged. The arithmetic follows diffusers' StableDiffusionXL(Img2Img)Pipeline:

* the prompt goes through CLIP ViT-L and OpenCLIP bigG; both give their penultimate
  hidden states, joined to 2048 channels; the pooled text is bigG's projected output;
* an empty negative prompt is all zeros when the model says so
  (``force_zeros_for_empty_prompt``, the base model's default);
* the UNet also gets ``time_ids``: original size, crop top-left and target size, or, for
  the refiner (``requires_aesthetics_score``), original size, crop and an aesthetic score
  (6 for the prompt, 2.5 for the negative);
* SDXL's VAE overflows in fp16 (black or NaN images): with ``force_upcast`` in its config
  it runs in fp32 whatever the UNet uses; otherwise a decode that gives NaN is redone in
  fp32, with a log line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from heyim_desktop.core.conditioning import PromptEncoding, TextCond, UNetCall
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.prompts import ClipEncoder, encode_prompt_pair
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.torch_engine import TorchComponents, _has_variant

log = logging.getLogger(__name__)

#: diffusers' defaults for the refiner's aesthetic-score time id.
AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5


class SDXLComponents(TorchComponents):
    """An SDXL base model or refiner (``text_encoder`` is None for the refiner)."""

    text_encoder: Any
    tokenizer: Any

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype, index: dict[str, Any]) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.device, self.dtype = device, dtype
        self.source_name = folder.name
        variant = "fp16" if dtype == torch.float16 and _has_variant(folder, "unet", "fp16") else None
        common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}

        def part_variant(part: str) -> str | None:
            return variant if variant and _has_variant(folder, part, variant) else None

        try:
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", dtype=dtype, variant=variant, **common)
            vae_config = AutoencoderKL.load_config(folder / "vae", local_files_only=True)
            vae = AutoencoderKL.from_pretrained(
                folder, subfolder="vae", dtype=vae_dtype(dtype, vae_config), variant=part_variant("vae"), **common
            )
            text_encoder = tokenizer = None
            if (folder / "text_encoder").is_dir():
                text_encoder = CLIPTextModel.from_pretrained(
                    folder / "text_encoder", variant=part_variant("text_encoder"), dtype=dtype, **common
                )
                tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                folder / "text_encoder_2", variant=part_variant("text_encoder_2"), dtype=dtype, **common
            )
            tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if "out of memory" in str(exc).lower():
                raise
            raise ModelError(f"{folder.name} could not be loaded: {exc}") from exc
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        self._setup(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2, scheduler_config=scheduler_config,
            force_zeros=bool(index.get("force_zeros_for_empty_prompt", True)), name=folder.name,
        )

    @classmethod
    def from_sdxl_modules(
        cls, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any, tokenizer_2: Any,
        scheduler_config: dict[str, Any], force_zeros: bool, device: torch.device, dtype: torch.dtype, name: str,
    ) -> "SDXLComponents":
        """Wrap models that are already loaded (single-file checkpoints); ``text_encoder`` None for a refiner."""
        self = cls.__new__(cls)
        self.device, self.dtype = device, dtype
        self.source_name = name
        self._setup(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2, scheduler_config=scheduler_config, force_zeros=force_zeros, name=name,
        )
        return self

    def _setup(
        self, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any, tokenizer_2: Any,
        scheduler_config: dict[str, Any], force_zeros: bool, name: str,
    ) -> None:
        device = self.device
        self.unet_model = unet.to(device).eval()
        self.vae = vae.to(device=device, dtype=vae_dtype(self.dtype, vae.config)).eval()
        self.text_encoder = None if text_encoder is None else text_encoder.to(device).eval()
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2.to(device).eval()
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = force_zeros
        self.time_id_count = _time_id_count(unet, text_encoder_2, name)
        # The UNet decides: 5 ids carry an aesthetic score (the refiner), 6 a target size.
        self.requires_aesthetics_score = self.time_id_count == 5
        self._finish(scheduler_config)

    def _family(self) -> str:
        return "sdxl" if self.text_encoder is not None else "sdxl-refiner"

    def _text_encoders(self) -> list[Any]:
        return [te for te in (self.text_encoder, self.text_encoder_2) if te is not None]

    def _first_tokenizer(self) -> Any:
        return self.tokenizer if self.tokenizer is not None else self.tokenizer_2

    # -- text -----------------------------------------------------------------------
    def _encoders(self, clip_skip: int) -> tuple[ClipEncoder, ...]:
        """Both encoders give the hidden states ``clip_skip`` layers before the penultimate one
        (AUTOMATIC1111's count; 1 is SDXL's usual penultimate layer, as diffusers' ``clip_skip`` None)."""
        if clip_skip > self.max_clip_skip:
            raise InvalidRequest("clip_skip", f"this model's text encoders have {self.max_clip_skip} layers; "
                                              f"clip skip must be at most {self.max_clip_skip}")
        layer = -(clip_skip + 1)

        def vit_l(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.text_encoder(input_ids, output_hidden_states=True).hidden_states[layer], None

        def big_g(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.text_encoder_2(input_ids, output_hidden_states=True)
            return out.hidden_states[layer], out.text_embeds

        second = ClipEncoder(self.tokenizer_2, big_g)
        if self.text_encoder is None:
            return (second,)
        return (ClipEncoder(self.tokenizer, vit_l), second)

    def encode_prompts(self, request: GenerationRequest, *, with_negative: bool) -> PromptEncoding:
        zero_negative = with_negative and self.force_zeros_for_empty_prompt and not request.negative_prompt.strip()
        enc = encode_prompt_pair(
            request, encoders=self._encoders(request.clip_skip), with_negative=with_negative and not zero_negative,
            device=self.device, dtype=self.dtype, max_chunks=self._capabilities.max_prompt_chunks,
        )
        cond = self._with_time_ids(enc.cond, request, negative=False)
        uncond = enc.uncond
        if zero_negative:
            uncond = enc.cond.map(torch.zeros_like)
        if uncond is not None:
            uncond = self._with_time_ids(uncond, request, negative=True)
        return PromptEncoding(cond, uncond, enc.warnings, enc.truncated_prompt, enc.truncated_negative)

    def time_ids(self, request: GenerationRequest, *, negative: bool) -> torch.Tensor:
        """(1, 6) original size + crop top-left + target size, or (1, 5) with an aesthetic score (refiner)."""
        size = [float(request.height), float(request.width)]
        crop = [0.0, 0.0]
        if self.requires_aesthetics_score:
            values = [*size, *crop, NEGATIVE_AESTHETIC_SCORE if negative else AESTHETIC_SCORE]
        else:
            values = [*size, *crop, *size]
        return torch.tensor([values], dtype=self.dtype, device=self.device)

    def _with_time_ids(self, text: TextCond, request: GenerationRequest, *, negative: bool) -> TextCond:
        if text.pooled is None:
            raise ModelError("SDXL's second text encoder gave no pooled output.")
        return TextCond(text.hidden, text.pooled, {**text.extras, "time_ids": self.time_ids(request, negative=negative)})

    # -- UNet and VAE -----------------------------------------------------------------
    def _added_cond(self, call: UNetCall) -> dict[str, torch.Tensor]:
        return {"text_embeds": call.text.pooled, "time_ids": call.text.extras["time_ids"]}  # type: ignore[dict-item]

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae_type = next(self.vae.parameters()).dtype
        decoded = self.vae.decode(latents.to(vae_type), return_dict=False)[0]
        if vae_type == torch.float16 and not torch.isfinite(decoded).all():
            log.warning("The VAE overflowed in fp16 (NaN in the image); decoding again in fp32 from now on.")
            self.vae.to(torch.float32)
            decoded = self.vae.decode(latents.to(torch.float32), return_dict=False)[0]
        return decoded

    def vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        vae_type = next(self.vae.parameters()).dtype
        moments = self.vae.encode(images.to(vae_type)).latent_dist.parameters
        return moments.to(self.dtype)


def vae_dtype(dtype: torch.dtype, vae_config: Any) -> torch.dtype:
    """fp32 for a VAE whose config asks to be upcast (SDXL's own), else the model's dtype."""
    force = vae_config.get("force_upcast", False) if isinstance(vae_config, dict) else getattr(vae_config, "force_upcast", False)
    return torch.float32 if dtype == torch.float16 and force else dtype


def _time_id_count(unet: Any, text_encoder_2: Any, name: str) -> int:
    """How many time ids the UNet's added embedding takes (6, or 5 for the refiner); a mismatch is an error."""
    config = unet.config
    if getattr(config, "addition_embed_type", None) != "text_time":
        raise ModelError(f"{name}: the UNet takes no SDXL time embedding (addition_embed_type is not text_time).")
    expected = int(unet.add_embedding.linear_1.in_features)
    per_id = int(config.addition_time_embed_dim)
    pooled = int(text_encoder_2.config.projection_dim)
    count, rest = divmod(expected - pooled, per_id)
    if rest or count not in (5, 6):
        raise ModelError(
            f"{name}: the UNet expects an added embedding of {expected} values, which does not fit "
            f"{per_id}-wide time ids and {pooled} pooled text channels."
        )
    return count
