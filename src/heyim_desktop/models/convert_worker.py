"""Child process: turn a pickle checkpoint into .safetensors. Never imported by the app itself.

Run as ``python -m heyim_desktop.models.convert_worker SRC DEST``. ``torch.load`` runs with
``weights_only=True``, which refuses any pickle that names code beyond tensors and plain
containers; and it runs here, in a process that exits right after, never in the app.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    src, dest = argv
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler's refusal is the message the user needs
        print(f"refused: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 3
    # Wrappers: Lightning's "state_dict"; BasicSR (Real-ESRGAN) upscalers' "params_ema" / "params".
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "params_ema", "params") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        print("refused: the file does not hold a dictionary of tensors", file=sys.stderr)
        return 3
    tensors = {str(k): v.contiguous() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        print("refused: the file holds no tensors", file=sys.stderr)
        return 3
    # Checkpoints often share storage between tensors (EMA copies); safetensors wants them apart.
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    save_file(tensors, dest, metadata={"converted_by": "heyim-desktop", "format": "pt"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
