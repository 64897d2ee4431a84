"""Precision and weight compression choices of the Core ML converter.

* **fp16 safety.** A model trained with ``upcast_attention`` (SD 2.x 768-v) overflows fp16 in
  its attention scores: q . k sums past 65504, softmax sees inf, the image turns black. The
  torch pipeline computes those scores and their softmax in fp32; so does the converted
  program here: the ops that make the score map (the q . k ``einsum``/``matmul`` and the
  elementwise ops between it and the softmax) and the ``softmax`` itself stay fp32, everything
  else is fp16 (coremltools' ``FP16ComputePrecision`` with an op selector; it inserts the casts).
  The weights-times-values product takes probabilities in [0, 1] and stays fp16.
  SDXL's VAE overflows fp16 too and is converted in fp32, unless its config says it is a fixed
  fp16 VAE (``force_upcast`` false, as the community's fp16-fix VAE).
* **Palettization.** ``--quantize 8|6|4`` replaces each large weight by a lookup table of
  2^bits fp16 values (k-means) and per-weight indices; Core ML expands them on the fly
  (``constexpr_lut_to_dense``). 8 and 6 bits use one table per tensor and need macOS 14;
  4 bits use one table per group of 16 output channels, which coremltools supports from
  macOS 15 (iOS 18 opset) only. 6 bits is the recommended size/quality balance for SDXL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import InvalidRequest

QUANTIZE_BITS = (8, 6, 4)
#: ``quantize`` per bit depth: (k-means granularity, group size, minimum macOS).
_PALETTES = {8: ("per_tensor", 0, 14), 6: ("per_tensor", 0, 14), 4: ("per_grouped_channel", 16, 15)}
#: Weights with fewer elements stay fp16 (biases, norms): the table would not pay for itself.
WEIGHT_THRESHOLD = 2048
#: Op types that start an attention score map; softmax normalises it.
_SCORE_OPS = frozenset({"einsum", "matmul"})
_BETWEEN_OPS = frozenset({"mul", "add", "sub", "real_div", "cast"})
#: Metadata key: the palette bit depth of a compressed model ("6"); absent when fp16.
META_BITS = "heyim.bits"
#: Metadata key: the ops kept fp32 in an otherwise fp16 program ("attention scores, softmax").
META_FP32_OPS = "heyim.fp32_ops"


def check_bits(bits: int | None) -> int | None:
    if bits is None or bits == 0:
        return None
    if bits not in QUANTIZE_BITS:
        raise InvalidRequest("quantize", f"choose 8, 6 or 4 bits, got {bits}")
    return int(bits)


def minimum_macos(bits: int | None) -> int:
    """The macOS a conversion targets: 13 in fp16, 14 or 15 when palettized."""
    return 13 if bits is None else _PALETTES[bits][2]


def _feeds_softmax(op: Any, depth: int = 3) -> bool:
    for out in op.outputs:
        for child in out.child_ops:
            if child.op_type == "softmax":
                return True
            if depth > 1 and child.op_type in _BETWEEN_OPS and _feeds_softmax(child, depth - 1):
                return True
    return False


def keeps_fp32(op: Any) -> bool:
    """True for the ops of an attention score map (q . k, the scale or mask between, softmax)."""
    if op.op_type == "softmax":
        return True
    return op.op_type in _SCORE_OPS | _BETWEEN_OPS and _feeds_softmax(op)


def compute_precision(precision: str) -> Any:
    """coremltools' ``compute_precision`` for "fp16", "fp32" or "fp16-attention-fp32"."""
    import coremltools as ct

    if precision == "fp32":
        return ct.precision.FLOAT32
    if precision == "fp16-attention-fp32":
        return ct.transform.FP16ComputePrecision(op_selector=lambda op: not keeps_fp32(op))
    return ct.precision.FLOAT16


def unet_precision(config: Any) -> tuple[str, str]:
    """The UNet's precision and a note for people ("" when plain fp16)."""
    if bool(getattr(config, "upcast_attention", False)):
        return "fp16-attention-fp32", (
            "The UNet upcasts attention (an SD 2.x 768-v model): its attention scores and softmax are "
            "computed in fp32, the rest in fp16, so fp16 overflow cannot blacken images.")
    return "fp16", ""


def vae_precision(config: Any, sdxl: bool) -> tuple[str, str]:
    """The VAE's precision and a note: SDXL's overflows fp16 unless it is a fixed fp16 VAE."""
    if not sdxl:
        return "fp16", ""
    if getattr(config, "force_upcast", True) is False:
        return "fp16", "The VAE is a fixed fp16 VAE (force_upcast is off): converted in fp16."
    return "fp32", "SDXL's VAE overflows in fp16: converted in fp32 (it runs on the GPU)."


@dataclass(frozen=True)
class Palettized:
    name: str
    bits: int
    before: int
    after: int

    def describe(self) -> str:
        return f"{self.name}: {human_bytes(self.before)} -> {human_bytes(self.after)} ({self.bits}-bit palette)"


def optimization_config(bits: int, weight_threshold: int = WEIGHT_THRESHOLD) -> Any:
    import coremltools.optimize.coreml as cto

    granularity, group, _ = _PALETTES[bits]
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=bits, granularity=granularity, group_size=group or 32,
                                weight_threshold=weight_threshold)
    return cto.OptimizationConfig(global_config=op)


def palettize(model: Any, bits: int, weight_threshold: int = WEIGHT_THRESHOLD) -> Any:
    """``model`` (a coremltools MLModel, in memory or loaded with ``skip_model_load``) with
    palettized weights; raises ``ModelError`` with the reason when coremltools cannot."""
    import contextlib
    import io

    import coremltools.optimize.coreml as cto

    from heyim_desktop.core.errors import ModelError

    try:
        import sklearn  # noqa: F401 - coremltools' k-means needs it; say so plainly
    except ImportError as exc:
        raise ModelError("Palettizing weights needs scikit-learn: install HeyIm's coreml extra "
                         "(pip install 'heyim-desktop[coreml]').") from exc
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars
            return cto.palettize_weights(model, optimization_config(bits, weight_threshold))
    except ValueError as exc:
        raise ModelError(f"coremltools could not palettize to {bits} bits: {exc}") from exc


def package_bytes(path: str | os.PathLike[str]) -> int:
    root = Path(path)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else root.stat().st_size


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
