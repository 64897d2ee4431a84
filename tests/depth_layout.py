"""Tiny random depth-estimation models in transformers' folder layout (DPT and Depth Anything)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_depth(folder: Path, kind: str = "dpt", seed: int = 0) -> Path:
    """A random DPT (``kind="dpt"``) or Depth Anything model with its image processor, saved as
    safetensors into ``folder`` (32 px patches of 16, so it runs in milliseconds)."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessorPil,
    )

    torch.manual_seed(seed)
    model: torch.nn.Module
    if kind == "dpt":
        model = DPTForDepthEstimation(DPTConfig(
            image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3],
            num_attention_heads=4, intermediate_size=37, neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16))
    else:
        backbone = Dinov2Config(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=37, out_features=["stage1", "stage2", "stage3", "stage4"],
                                reshape_hidden_states=False)
        model = DepthAnythingForDepthEstimation(DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=32, patch_size=16, neck_hidden_sizes=[16, 16, 32, 32],
            fusion_hidden_size=16, head_hidden_size=8))
    model.eval().save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
    DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder
