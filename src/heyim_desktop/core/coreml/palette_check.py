"""Read a palettized Core ML package's weights back, to measure what palettization costs.

Core ML cannot predict off macOS, so the cost of ``--quantize`` is measured through torch:
the package's ``constexpr_lut_to_dense`` inputs (each weight's lookup table and indices, as
coremltools' ``get_weights_metadata`` reads them from the weight file) are expanded here into
dense weights, mapped back onto the diffusers UNet the package was converted from, and the
UNet then runs in torch with those weights. What this measures is the weights' error only: Core
ML's own fp16 arithmetic comes on top of it on a Mac (the ``macos`` test measures both).

Mapping: an expanded weight is named after the fp16 constant it replaced (coremltools appends
``_palettized``); that constant, in the unpalettized package, holds the torch parameter's values
in fp16, possibly reshaped (a linear layer's (out, in) weight is a (out, in, 1, 1) conv weight in
the Neural Engine layout). Parameters are found by those values, so the mapping does not rest on
how the tracer spells names.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

_SUFFIX = "_palettized"


def expand_lut(lut: NDArray[Any], indices: NDArray[Any]) -> NDArray[Any]:
    """The dense weight of one ``constexpr_lut_to_dense`` op (the iOS 18 form): ``lut`` has one
    table per block of the weight, shape (blocks per axis..., 2^bits, 1); ``indices`` has the
    weight's shape. Scalar tables only (vector palettization is not used by the converter)."""
    if lut.shape[-1] != 1 or lut.ndim != indices.ndim + 2:
        raise ValueError(f"unexpected lookup table of shape {lut.shape} for indices {indices.shape}")
    tables = lut[..., 0]
    where = [np.arange(n) // (n // b) for n, b in zip(indices.shape, tables.shape[:-1])]
    grid = np.ix_(*where)
    return np.asarray(tables[(*grid, indices.astype(np.int64))])


def _metadata(package: Path, threshold: int) -> dict[str, Any]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(package), skip_model_load=True)
    with contextlib.redirect_stderr(io.StringIO()):  # progress bar
        return dict(cto.get_weights_metadata(model, weight_threshold=threshold))


def palettized_weights(package: str | Path) -> dict[str, tuple[NDArray[Any], NDArray[Any]]]:
    """The (lookup table, indices) of each palettized weight of ``package``, by the name of the
    fp16 constant it replaced."""
    parts: dict[str, dict[str, NDArray[Any]]] = {}
    for name, meta in _metadata(Path(package), 0).items():
        users = [op for op in meta.child_ops if op.op_type == "constexpr_lut_to_dense"]
        if not users:
            continue
        op_name = users[0].name
        kind = "lut" if name.startswith(op_name + "_lut") else "indices" if name.startswith(op_name + "_indices") else ""
        if not kind or not op_name.endswith(_SUFFIX):
            raise ValueError(f"unexpected palette input {name} of {op_name}")
        parts.setdefault(op_name[: -len(_SUFFIX)], {})[kind] = np.asarray(meta.val)
    return {name: (p["lut"], p["indices"]) for name, p in parts.items()}


def _key(values: NDArray[Any]) -> tuple[int, bytes]:
    flat = np.ascontiguousarray(values, dtype=np.float16).reshape(-1)
    return flat.size, flat.tobytes()


def torch_weights(
    module: Any, fp16_package: str | Path, palettes: dict[str, tuple[NDArray[Any], NDArray[Any]]],
) -> dict[str, Any]:
    """A state dict for ``module`` (the torch model the package was converted from) in which
    every palettized parameter has its expanded palette values (fp16-rounded values elsewhere in
    it); parameters without a palette are left out. A palette is found on the parameter holding
    the same values, whole, times a constant coremltools folded in (the attention scale, into
    ``to_q``), or as a contiguous block. Raises ``ValueError`` when a palette matches no parameter or
    several."""
    import torch

    params = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
    flat16 = {k: np.ascontiguousarray(v.detach().cpu().numpy(), np.float16).reshape(-1) for k, v in params.items()}
    by_values: dict[tuple[int, bytes], list[str]] = {}
    for pname, values in flat16.items():
        by_values.setdefault(_key(values), []).append(pname)
    originals = _metadata(Path(fp16_package), 0)
    dense: dict[str, NDArray[Any]] = {}
    for const, (lut, indices) in palettes.items():
        if const not in originals:
            raise ValueError(f"{const} is not a weight of the fp16 package")
        values = np.ascontiguousarray(originals[const].val, np.float16).reshape(-1)
        found = [(name, 0, 1.0) for name in by_values.get(_key(values), [])]
        if not found:  # a parameter with a constant folded in (the attention scale into to_q)
            v32 = values.astype(np.float32)
            for name, hay in flat16.items():
                if hay.size == values.size:
                    h32 = hay.astype(np.float32)
                    c = float(v32 @ h32) / max(float(h32 @ h32), 1e-30)
                    if c != 0 and np.abs(v32 - c * h32).max() <= 2e-3 * np.abs(v32).max():
                        found.append((name, 0, c))
        if not found:  # a block of a larger parameter
            needle = values.tobytes()
            for name, hay in flat16.items():
                at = hay.tobytes().find(needle) if hay.size > values.size else -1
                if at >= 0 and at % 2 == 0:
                    found.append((name, at // 2, 1.0))
        if len(found) != 1:
            raise ValueError(f"{const} matches {len(found)} parameters of the torch model")
        name, start, scale = found[0]
        target = dense.setdefault(name, flat16[name].astype(np.float32))
        target[start:start + values.size] = expand_lut(lut, indices).astype(np.float32).reshape(-1) / scale
    return {name: torch.from_numpy(values.reshape(tuple(params[name].shape))).to(params[name].dtype)
            for name, values in dense.items()}


def max_rel(a: Any, b: Any) -> float:
    """max |a - b| relative to max |b| (as floats)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))


def shuffled(palettes: dict[str, tuple[NDArray[Any], NDArray[Any]]], seed: int = 0) -> dict[str, tuple[NDArray[Any], NDArray[Any]]]:
    """The same palettes with each table's entries permuted: a broken palettization, as a control."""
    rng = np.random.default_rng(seed)
    return {name: (np.take(lut, rng.permutation(lut.shape[-2]), axis=-2), idx) for name, (lut, idx) in palettes.items()}


def compare(
    components: Any, fp16_package: str | Path, palettes: dict[str, tuple[NDArray[Any], NDArray[Any]]], request: Any,
) -> dict[str, float]:
    """Run ``components``' UNet (torch) with the fp16 package's weights and with the palettized
    ones: ``noise``, the noise prediction's max difference relative to its largest value, for
    fixed random inputs; ``image``, the max abs difference of the decoded images (floats in
    [0, 1]) of a generation of ``request``; ``weights``, the palettized weights' max difference
    relative to each weight's largest value. The UNet's own weights are restored afterwards."""
    import torch

    from heyim_desktop.core.loop import run_loop

    unet = components.unet_model
    original = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    fp16 = {k: (v.half().to(v.dtype) if v.is_floating_point() else v) for k, v in original.items()}
    expanded = torch_weights(unet, fp16_package, palettes)
    palettized = {**fp16, **expanded}
    weights = max(max_rel(expanded[k], fp16[k]) for k in expanded)
    gen = torch.Generator().manual_seed(0)
    cfg = unet.config
    size = int(cfg.sample_size)
    sample = torch.randn((1, int(cfg.in_channels), size, size), generator=gen)
    states = torch.randn((1, 77, int(cfg.cross_attention_dim)), generator=gen)
    out: dict[str, Any] = {}
    try:
        for label, state in (("fp16", fp16), ("palette", palettized)):
            unet.load_state_dict(state)
            with torch.no_grad():
                noise = unet(sample, torch.tensor([500]), encoder_hidden_states=states).sample
            out[label] = (noise.numpy().copy(), np.asarray(run_loop(components, request).images, np.float32))
    finally:
        unet.load_state_dict(original)
    return {"noise": max_rel(out["palette"][0], out["fp16"][0]),
            "image": float(np.abs(out["palette"][1] - out["fp16"][1]).max()), "weights": weights}
