"""The small contract every engine supplies to the shared denoising loop.

Tensors cross it on ``device`` in ``dtype``; an engine that is not torch-based (Core ML)
converts at its own boundary. Shapes follow diffusers: latents (B, C, h, w), text
conditioning as :class:`~heyim_desktop.core.conditioning.TextCond`, images (B, 3, H, W) in
[-1, 1], VAE moments (B, 2C, h, w). What the model can do is ``capabilities``; the loop
and everything outside the engine read that, never the attributes below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.core.conditioning import PromptEncoding, TokenCount, UNetCall
    from heyim_desktop.core.request import GenerationRequest


class Components(Protocol):
    device: "torch.device"
    dtype: "torch.dtype"
    #: Pixels per latent cell (8 for Stable Diffusion).
    vae_scale_factor: int
    #: Channels of the latents the loop denoises (4 for SD; an inpainting UNet takes more
    #: through ``UNetCall.concat``).
    latent_channels: int
    #: The VAE's latent scaling factor (0.18215 for SD 1.x/2.x, 0.13025 for SDXL).
    scaling_factor: float
    #: The model's own scheduler config; schedulers are built from it.
    scheduler_config: Mapping[str, Any]
    #: Set for models distilled with a guidance embedding (LCM): its width.
    guidance_embedding_dim: int | None

    @property
    def capabilities(self) -> "Capabilities": ...

    def encode_prompts(self, request: "GenerationRequest", *, with_negative: bool) -> "PromptEncoding": ...

    def count_tokens(self, text: str) -> "TokenCount": ...

    def prepare_networks(self, request: "GenerationRequest") -> "GenerationRequest":
        """Apply the request's LoRAs/embeddings (or refuse them); the request the encoders see."""
        ...

    def unet(self, call: "UNetCall") -> "torch.Tensor": ...

    def vae_decode(self, latents: "torch.Tensor") -> "torch.Tensor": ...

    def vae_encode(self, images: "torch.Tensor") -> "torch.Tensor": ...

    def release(self) -> None: ...
