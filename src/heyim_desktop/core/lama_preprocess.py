"""The ControlNet preprocessor ``inpaint_only+lama``: the masked area filled by LaMa first.

What the AUTOMATIC1111 ControlNet extension does for this module, and what HeyIm does:

1. **The fill.** The picture and its mask (as an alpha channel, 0..255) are scaled together so
   the short side is 256 pixels (LaMa was trained at 256; area averaging when shrinking, bicubic
   when enlarging), padded on the right and bottom to a multiple of 64 by repeating the edge
   pixels, and LaMa runs on that with the mask binarised at one half (masked pixels zeroed, the
   known ones kept). The padding is cut off, the result scaled back to the picture's size
   (bilinear), and blended into the original by the (soft) mask: ``fill * a + original * (1 - a)``.
   Pixels outside the mask are the original's, bit for bit.
2. **The control map** is that filled picture with the mask; the ControlNet sees -1 where the
   mask is over one half (the same inpaint protocol as ``inpaint``), the filled colours elsewhere.
   With "Resize and Fill" the borders the fit adds are masked too, so LaMa outpaints them (the
   extension's "outpaint fix").
3. **The starting noise.** The filled picture's VAE latent ``z`` is mixed into the noise the
   sampler starts from, as the forward process at the last training step makes it:
   ``noise' = sqrt(a_T) * z + sqrt(1 - a_T) * noise`` (``a_T`` the scheduler's last cumulative
   alpha). For text-to-image that is the starting latent; for image-to-image and inpainting it is
   the noise added to the input image (and, for the kept area of an ordinary model, the noise it
   is re-noised with each step). :class:`LamaNoise` does this before the loop's first step.
4. **Keeping the unmasked pixels** (the extension pastes the control image back outside a dilated,
   blurred mask): HeyIm's inpainting pastes the input back outside its mask for every inpainting
   request, so nothing is added here.

Where HeyIm differs: the request's mask is known at the generation size, so the control image is
fitted to that size first and LaMa runs on the fitted picture (the extension runs LaMa at the
control image's size and fits the result); the latent ``z`` is the VAE's mean, not a draw from it
(the extension draws from torch's global generator, which would make the seed not repeat); the
extension's own rule that "inpaint_only" becomes "inpaint" when img2img has a mask does not touch
this module in either.

The weights: a LaMa generator as ``.safetensors`` in a ControlNet folder's ``annotator``
subfolder (any depth). Any safetensors file there whose tensors spandrel recognises as LaMa is
used; ``ControlNetLama.safetensors`` (the extension's ``ControlNetLama.pth``, converted) and
``big-lama.safetensors`` are preferred, in that order, over other names. A checkpoint's
non-generator tensors (``discriminator.*``, losses) are dropped; the generator loads strictly.
Pickles (``.pth``, ``.pt``, ``.ckpt``) are never read: convert them offline. spandrel's LaMa module
imports torchvision's ``rotate``, which only its learnable spatial-transform blocks call; big-LaMa
has none, so :func:`heyim_desktop.core.upscale.import_spandrel`'s stand-in suffices (a model that did
call it fails with ModelError rather than running wrong).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.extensions import BaseExtension

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from heyim_desktop.core.components import Components
    from heyim_desktop.core.extensions import LoopState
    from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

MODULE = "inpaint_only+lama"
#: Tensors by which spandrel tells a LaMa state dict (a bare generator, or a training checkpoint's).
LAMA_KEYS = ("model.model.1.bn_l.running_mean", "generator.model.1.bn_l.running_mean")
#: Names taken first when several LaMa files are present.
PREFERRED = ("ControlNetLama.safetensors", "big-lama.safetensors")
WEIGHTS_HINT = ("a LaMa model as .safetensors (ControlNetLama.safetensors or big-lama.safetensors, "
                "converted from the .pth)")
#: LaMa's working resolution (its short side), as the extension always uses.
LAMA_RES = 256
_PAD = 64

_lock = threading.Lock()
_models: "OrderedDict[tuple[str, int, str], Any]" = OrderedDict()
_fills: "OrderedDict[str, Any]" = OrderedDict()


def is_lama_file(path: Path) -> bool:
    """Whether ``path`` is a readable safetensors file holding LaMa's tensors (header only)."""
    from heyim_desktop.core.model_files import read_safetensors_header

    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    try:
        header = read_safetensors_header(path)
    except (ModelError, OSError):
        return False
    return any(k in header.tensors for k in LAMA_KEYS)


def find_weights(files: Iterable[Path]) -> Path | None:
    """The LaMa file among ``files`` (the annotator folders' files): a preferred name first."""
    found = [p for p in files if p.suffix.lower() == ".safetensors" and is_lama_file(p)]
    rank = {name.lower(): i for i, name in enumerate(PREFERRED)}
    found.sort(key=lambda p: (rank.get(p.name.lower(), len(rank)), p.name.lower(), str(p)))
    return found[0] if found else None


def check_file(path: Path) -> None:
    """Raise ModelError unless ``path`` is a safetensors LaMa model."""
    from heyim_desktop.core.model_files import read_safetensors_header

    if not path.is_file():
        raise ModelError(f"LaMa model not found: {path}")
    header = read_safetensors_header(path)  # UnsafeModel for a pickle, CorruptModel for a damaged file
    if not any(k in header.tensors for k in LAMA_KEYS):
        raise ModelError(f"{path.name} is not a LaMa inpainting model (none of its tensors are LaMa's)")


def _load(path: Path, device: str) -> Any:
    import torch
    from safetensors.torch import load_file

    from heyim_desktop.core.upscale import import_spandrel

    check_file(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns, device)
    with _lock:
        found = _models.get(key)
        if found is not None:
            return found
        spandrel = import_spandrel()
        state = load_file(str(path), device="cpu")
        generator = {k: v for k, v in state.items() if k.startswith(("model.", "generator."))}
        if len(generator) < len(state):
            log.info("%s: %d tensors that are not LaMa's generator were left out", path.name, len(state) - len(generator))
        try:
            descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(generator)
        except spandrel.UnsupportedModelError:
            raise ModelError(f"{path.name} is not a LaMa inpainting model spandrel knows") from None
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelError(f"{path.name}: the weights do not fit LaMa ({exc})") from None
        if descriptor.architecture.id != "LaMa" or not isinstance(descriptor, spandrel.MaskedImageModelDescriptor):
            raise ModelError(f"{path.name} is a {descriptor.architecture.name} model, not LaMa")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ModelError(f"{path.name} works on {descriptor.input_channels}-channel images; LaMa here fills RGB")
        descriptor.to(torch.device(device)).eval()
        while len(_models) >= 2:  # the preview's CPU copy and the engine's, no more
            _models.popitem(last=False)
        _models[key] = descriptor
        log.info("loaded LaMa %s on %s", path, device)
        return descriptor


def _pad64(n: int) -> int:
    return -n % _PAD


def lama_input(rgb: "npt.NDArray[np.uint8]", alpha: "npt.NDArray[np.uint8]") -> tuple["npt.NDArray[np.uint8]", int, int]:
    """The (H', W', 4) picture-and-mask LaMa runs on: short side 256, padded to 64 by the edge
    pixels; and the unpadded height and width."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    both = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    k = LAMA_RES / min(h, w)
    th, tw = int(round(h * k)), int(round(w * k))
    scaled = cv2.resize(both, (tw, th), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    padded = np.pad(scaled, [[0, _pad64(th)], [0, _pad64(tw)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), th, tw


def run_lama(descriptor: Any, feed: "npt.NDArray[np.uint8]") -> "npt.NDArray[np.uint8]":
    """LaMa on ``feed`` (H, W, 4 uint8, mask in the last channel): the (H, W, 3) uint8 result."""
    import numpy as np
    import torch

    device = descriptor.device
    x = torch.from_numpy(feed).permute(2, 0, 1)[None].float() / 255.0
    image = x[:, :3].to(device)
    mask = (x[:, 3:] > 0.5).float().to(device)
    with torch.inference_mode():
        out = descriptor(image * (1 - mask), mask)
    out = out[0].permute(1, 2, 0).float().cpu().numpy() * 255.0
    return np.asarray(out.clip(0, 255).astype(np.uint8))


def _fill_key(rgb: "npt.NDArray[Any]", alpha: "npt.NDArray[Any]", path: Path, device: str) -> str:
    digest = hashlib.sha256()
    for part in (str(path.resolve()), str(path.stat().st_mtime_ns), device, str(rgb.shape)):
        digest.update(part.encode())
    digest.update(rgb.tobytes())
    digest.update(alpha.tobytes())
    return digest.hexdigest()


def lama_fill(rgb: "npt.NDArray[np.uint8]", mask: "npt.NDArray[np.float32]", path: str | Path,
              device: str = "cpu") -> "npt.NDArray[np.uint8]":
    """``rgb`` (H, W, 3) with the area under ``mask`` (H, W, 0..1) filled by LaMa, blended in by the
    mask as the extension does; the last few results are kept (the map and the noise share one)."""
    import cv2
    import numpy as np

    if rgb.ndim != 3 or rgb.shape[2] != 3 or mask.shape != rgb.shape[:2]:
        raise InvalidRequest("controlnet.mask", f"the mask ({mask.shape}) does not match the image ({rgb.shape[:2]})")
    weights = Path(path)
    check_file(weights)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    alpha = np.ascontiguousarray((np.clip(mask, 0.0, 1.0) * 255.0).round().astype(np.uint8))
    key = _fill_key(rgb, alpha, weights, device)
    with _lock:
        cached = _fills.get(key)
    if cached is not None:
        return np.asarray(cached).copy()
    descriptor = _load(weights, device)
    h, w = rgb.shape[:2]
    feed, th, tw = lama_input(rgb, alpha)
    predicted = cv2.resize(run_lama(descriptor, feed)[:th, :tw], (w, h))
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    out = (np.asarray(predicted, np.float32) * a + rgb.astype(np.float32) * (1 - a)).clip(0, 255).astype(np.uint8)
    with _lock:
        while len(_fills) >= 4:
            _fills.popitem(last=False)
        _fills[key] = out
    return out.copy()


def outpaint_mask(size: tuple[int, int], width: int, height: int, resize_mode: str) -> "npt.NDArray[np.float32]":
    """1 on the borders "Resize and Fill" adds when an image of ``size`` (w, h) is fitted to
    ``width x height`` (LaMa fills them), 0 elsewhere and for the other modes."""
    import numpy as np
    from PIL import Image

    from heyim_desktop.core.control_preprocess import fit_control_image

    if resize_mode != "Resize and Fill" or size == (width, height):
        return np.zeros((height, width), np.float32)
    inside = fit_control_image(Image.new("RGB", size, (255, 255, 255)), width, height, resize_mode)
    return np.asarray((np.asarray(inside.convert("L"), np.float32) < 128).astype(np.float32))


def fitted_inputs(image: "Image.Image", width: int, height: int, resize_mode: str,
                  mask: "npt.NDArray[np.float32] | None") -> tuple["npt.NDArray[np.uint8]", "npt.NDArray[np.float32]"]:
    """The control image fitted to the generation size (RGB uint8) and the mask LaMa fills: the
    request's (at that size) and, for "Resize and Fill", the borders the fit adds."""
    import numpy as np

    from heyim_desktop.core.control_preprocess import fit_control_image
    from heyim_desktop.core.images import to_rgb

    if mask is None:
        raise InvalidRequest("controlnet.module", f"the {MODULE} preprocessor needs an inpainting mask on the request")
    if image.width < 1 or image.height < 1:
        raise InvalidRequest("controlnet.image", "the control image has no pixels")
    rgb = to_rgb(image)
    fitted = np.ascontiguousarray(np.asarray(fit_control_image(rgb, width, height, resize_mode), dtype=np.uint8))
    full = np.maximum(np.asarray(mask, np.float32), outpaint_mask(rgb.size, width, height, resize_mode))
    return fitted, full


def control_fill(image: "Image.Image", width: int, height: int, resize_mode: str,
                 mask: "npt.NDArray[np.float32] | None", path: str | Path, device: str = "cpu") -> "npt.NDArray[np.uint8]":
    """The filled control picture at the generation size (H, W, 3) uint8."""
    fitted, full = fitted_inputs(image, width, height, resize_mode, mask)
    return lama_fill(fitted, full, path, device)


def control_map(image: "Image.Image", width: int, height: int, resize_mode: str,
                mask: "npt.NDArray[np.float32] | None", path: str | Path, device: str = "cpu") -> "npt.NDArray[np.float32]":
    """The ControlNet input: the filled picture in [0, 1], -1 where the mask is over one half."""
    import numpy as np

    fitted, full = fitted_inputs(image, width, height, resize_mode, mask)
    arr = lama_fill(fitted, full, path, device).astype(np.float32) / 255.0
    arr[full > 0.5] = -1.0
    return np.ascontiguousarray(arr)


class LamaNoise(BaseExtension):
    """Mixes the LaMa-filled picture's latent into the starting noise (see the module's point 3)."""

    def __init__(self, request: "GenerationRequest", components: "Components") -> None:
        self.request = request
        self.components = components
        self._latent: Any = None

    def _filled_latent(self) -> Any:
        import numpy as np
        import torch

        from heyim_desktop.core.controlnet import lama_filled_image

        if self._latent is None:
            filled = lama_filled_image(self.request, str(self.components.device))
            if filled is None:
                return None
            pixels = torch.from_numpy(np.ascontiguousarray(filled.transpose(2, 0, 1)))[None].float() / 255.0 * 2.0 - 1.0
            c = self.components
            moments = c.vae_encode(pixels.to(device=c.device, dtype=c.dtype))
            mean = torch.chunk(moments, 2, dim=1)[0]
            self._latent = mean * c.scaling_factor
        return self._latent

    def before_loop(self, state: "LoopState") -> None:
        if state.first_step > 0:  # a resumed stage (the refiner) starts from latents, not noise
            return
        alphas = getattr(state.scheduler, "alphas_cumprod", None)
        if alphas is None:
            log.warning("%s: the scheduler has no alphas_cumprod; the starting noise is left as it is", MODULE)
            return
        z = self._filled_latent()
        if z is None or tuple(z.shape[2:]) != tuple(state.latents.shape[2:]):
            return
        last = float(alphas[-1])
        sigma = state.scheduler.init_noise_sigma
        noise = state.noise if state.noise is not None else state.latents / sigma
        z = z.to(device=noise.device, dtype=noise.dtype).expand(noise.shape[0], -1, -1, -1)
        mixed = (last ** 0.5) * z + ((1.0 - last) ** 0.5) * noise
        pure = state.init_latents is None or (self.request.inpaint is not None and self.request.strength == 1.0)
        if pure:
            state.latents = mixed * sigma
        else:
            steps = state.timesteps[:1].repeat(noise.shape[0])
            state.latents = state.scheduler.add_noise(state.init_latents, mixed, steps)
        if state.noise is not None:
            state.noise = mixed
        log.debug("%s: starting noise mixed with the filled picture's latent (a_T=%.5f)", MODULE, last)
