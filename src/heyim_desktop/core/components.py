"""The small contract every engine supplies to the shared denoising loop.

Tensors cross it on ``device`` in ``dtype``; an engine that is not torch-based (Core ML)
converts at its own boundary. Shapes follow diffusers: latents (B, C, h, w), text
embeddings (B, 77, D), images (B, 3, H, W) in [-1, 1], VAE moments (B, 2C, h, w).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    import torch


class Components(Protocol):
    device: "torch.device"
    dtype: "torch.dtype"
    #: Pixels per latent cell (8 for Stable Diffusion).
    vae_scale_factor: int
    latent_channels: int
    #: The VAE's latent scaling factor (0.18215 for SD 1.x/2.x).
    scaling_factor: float
    #: The model's own scheduler config; schedulers are built from it.
    scheduler_config: Mapping[str, Any]
    #: A transformers CLIP tokenizer (the model's own files, never the network).
    tokenizer: Any
    #: Set for models distilled with a guidance embedding (LCM): no classifier-free guidance.
    guidance_embedding_dim: int | None
    #: Largest number of images denoised together (static-shape engines say 1).
    max_batch: int
    #: (width, height) when the model only supports one size, else None.
    fixed_size: tuple[int, int] | None
    #: Whether ``vae_encode`` is available (image-to-image).
    supports_img2img: bool

    def encode_text(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor": ...

    def unet(
        self,
        latents: "torch.Tensor",
        timestep: "torch.Tensor",
        text_embeddings: "torch.Tensor",
        timestep_cond: "torch.Tensor | None" = None,
    ) -> "torch.Tensor": ...

    def vae_decode(self, latents: "torch.Tensor") -> "torch.Tensor": ...

    def vae_encode(self, images: "torch.Tensor") -> "torch.Tensor": ...

    def release(self) -> None: ...
