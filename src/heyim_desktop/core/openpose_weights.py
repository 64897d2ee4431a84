"""Reading the OpenPose networks' weights: one strict check, one loader, one cache for all three.

The body, hand and face models come as the annotators' ``.pth`` pickles, which HeyIm never opens;
the user converts them to safetensors. Before anything is loaded, the file's header must name
exactly the network's tensors (bare layer names, or with the module prefix where the layout
allows it) in the expected shapes and a floating-point type; anything else is a ModelError that
says which tensor is wrong.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from heyim_desktop.core.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsLayout:
    """What one network's safetensors file must hold."""

    #: The network in words ("OpenPose body model"), for messages.
    what: str
    #: The safetensors file name HeyIm looks for, and the annotators' original it is converted from.
    weights: str
    original: str
    #: Each tensor by its module name (``model0.conv1_1.weight``) and its shape.
    shapes: Mapping[str, tuple[int, ...]]
    #: Whether the file's names may carry the module prefix (a saved ``state_dict()``).
    prefixed_ok: bool


def _listed(names: list[str]) -> str:
    return f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"


def tensor_names(layout: WeightsLayout, names: set[str], path: Path) -> dict[str, str]:
    """The file's tensor name for each module name; ModelError unless the names are exactly the network's."""
    wanted = layout.shapes
    bare = {key.split(".", 1)[1]: key for key in wanted}
    if names == set(bare):
        return {module: layer for layer, module in bare.items()}
    if layout.prefixed_ok and names == set(wanted):
        return {key: key for key in wanted}
    blocks = {key.split(".", 1)[0] for key in wanted}
    stripped = {n.split(".", 1)[1] if layout.prefixed_ok and n.split(".", 1)[0] in blocks and "." in n else n
                for n in names}
    missing, extra = sorted(set(bare) - stripped), sorted(stripped - set(bare))
    why = "; ".join(part for part in (
        f"missing {_listed(missing)}" if missing else "", f"unexpected {_listed(extra)}" if extra else "",
    ) if part) or "mixed tensor names"
    raise ModelError(f"{path}: not the {layout.what} ({why})")


def check_weights(path: Path, layout: WeightsLayout) -> dict[str, str]:
    """Raise ModelError unless ``path`` holds the network in safetensors; the module -> file name map."""
    from heyim_desktop.core.model_files import read_safetensors_header

    try:
        header = read_safetensors_header(path)
    except ModelError as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc}); convert {layout.original} "
                         f"to {layout.weights} (see the README)") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the {layout.what} ({exc})") from exc
    names = tensor_names(layout, set(header.tensors), path)
    for module, shape in layout.shapes.items():
        info = header.tensors[names[module]]
        if info.shape != shape:
            raise ModelError(f"{path}: not the {layout.what} ({names[module]} is {list(info.shape)}, "
                             f"expected {list(shape)})")
        if info.dtype not in ("F32", "F16", "BF16"):
            raise ModelError(f"{path}: {names[module]} holds {info.dtype}, not floating-point weights")
    return names


def load_checked(path: Path, layout: WeightsLayout, build: Callable[[], Any], device: str = "cpu") -> Any:
    """``build()``'s network with the weights of ``path`` (checked first, loaded strictly), in eval mode."""
    from safetensors.torch import load_file

    names = check_weights(path, layout)
    try:
        tensors = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot read the {layout.what} ({exc})") from exc
    net = build()
    net.load_state_dict({module: tensors[stored].float() for module, stored in names.items()}, strict=True)
    return net.to(device).eval()


class NetworkCache:
    """Loaded networks kept for the next map (a preview's CPU copy and the engine's), the oldest
    dropped beyond ``limit``; a file changed on disk is loaded again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._nets: dict[tuple[str, float, str, str], Any] = {}

    def get(self, path: Path, layout: WeightsLayout, device: str, load: Callable[[], Any]) -> Any:
        try:
            key = (str(path.resolve()), path.stat().st_mtime, device, layout.weights)
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the {layout.what} ({exc})") from exc
        with self._lock:
            found = self._nets.get(key)
            if found is None:
                found = load()
                while len(self._nets) >= self.limit:
                    self._nets.pop(next(iter(self._nets)))
                self._nets[key] = found
                log.info("loaded the %s %s on %s", layout.what, path, device)
            return found
