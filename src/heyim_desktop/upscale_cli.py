"""``heyim-desktop upscale IMAGE... --scale 2|4 [--upscaler NAME] [--out DIR]`` and hires options for ``generate``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any


def add_upscale_parser(sub: Any) -> None:
    up = sub.add_parser("upscale", help="enlarge images 2x or 4x (an upscaler model, or Lanczos/Nearest)")
    up.add_argument("images", nargs="+", metavar="IMAGE", help="images to enlarge")
    up.add_argument("--scale", type=float, default=2.0, help="how many times larger, 1 to 8 (default 2; models run at their own scale, then Lanczos to the exact size)")
    up.add_argument("--upscaler", "-u", default="Lanczos",
                    help="Lanczos (default), Nearest, or an upscaler model's name (`heyim-desktop models list`) or file")
    up.add_argument("--out", "-o", default="outputs", help="folder for the PNGs (default ./outputs)")
    up.add_argument("--tile", type=int, default=0, help="tile size in pixels for models (default: from free memory)")
    up.add_argument("--quiet", "-q", action="store_true", help="no progress")


def add_hires_arguments(gen: Any) -> None:
    gen.add_argument("--hires-scale", type=float, default=None,
                     help="hires fix: generate at --size, upscale by this much, refine (e.g. 2)")
    gen.add_argument("--hires-upscaler", default="Latent",
                     help="hires fix upscaler: Latent (default), Latent (nearest), ..., Lanczos, Nearest or a model's name")
    gen.add_argument("--hires-steps", type=int, default=0, help="second-pass steps (default 0: as many as --steps)")
    gen.add_argument("--hires-strength", type=float, default=0.7, help="second-pass denoising strength, 0 to 1 (default 0.7)")
    gen.add_argument("--hires-save-first-pass", action="store_true", help="also save the first pass's images")


def hires_from_args(args: argparse.Namespace) -> Any:
    """A resolved HiresFix from the generate options, or None without --hires-scale."""
    if args.hires_scale is None:
        return None
    from heyim_desktop.core.request import HiresFix
    from heyim_desktop.models.cli import _library
    from heyim_desktop.models.upscalers import resolve_hires

    hires = HiresFix(scale=args.hires_scale, upscaler=args.hires_upscaler, steps=args.hires_steps,
                     denoising_strength=args.hires_strength, save_first_pass=args.hires_save_first_pass)
    return resolve_hires(_library(), hires)


def _resolve(name: str) -> tuple[str, str | None]:
    from heyim_desktop.models.cli import _library
    from heyim_desktop.models.upscalers import resolve_upscaler

    path = Path(name).expanduser()
    if path.suffix.lower() in (".safetensors", ".pth", ".pt") and path.is_file():
        return path.stem, str(path)
    return resolve_upscaler(_library(), name)


def cmd_upscale(args: argparse.Namespace) -> int:
    from heyim_desktop.core.cancel import Cancelled, CancelToken
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.images import load_image
    from heyim_desktop.core.metadata import parse_parameters, postprocess_parameters, read_parameters_text
    from heyim_desktop.core.output import write_png_atomic
    from heyim_desktop.core.upscale import check_scale
    from heyim_desktop.core.upscale_job import UpscaleRequest, run_upscale_job

    scale = check_scale(args.scale)
    if args.tile and not 32 <= args.tile <= 2048:
        raise InvalidRequest("tile", f"must be from 32 to 2048, got {args.tile}")
    name, model_path = _resolve(args.upscaler)
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidRequest("out", f"{out_dir} exists and is not a folder")
    images = [(Path(p).expanduser(), load_image(p)) for p in args.images]  # every input readable before any work
    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    quiet = args.quiet
    try:
        for path, image in images:
            try:
                source = read_parameters_text(path) or ""
            except OSError:
                source = ""
            settings: dict[str, Any] = {}
            if source:
                parsed = parse_parameters(source)
                settings = {"prompt": parsed.prompt, "negative_prompt": parsed.negative_prompt}
                if parsed.seed is not None:
                    settings["seed"] = parsed.seed
            request = UpscaleRequest(image=image, scale=scale, upscaler=name, upscaler_path=model_path,
                                     tile_preference=args.tile or None, source_parameters=source, source_settings=settings)

            def report(p: Any, label: str = path.name) -> None:
                if not quiet:
                    end = "\n" if p.step >= p.total else ""
                    print(f"\r{label}: tile {p.step}/{p.total}", end=end, file=sys.stderr, flush=True)

            result = run_upscale_job(request, progress=report, cancel=cancel)
            out = result.images[0].image
            params = postprocess_parameters(source, request.effective_scale, name)
            meta = dict(settings, width=out.width, height=out.height, postprocess_upscale_by=request.effective_scale,
                        postprocess_upscaler=name, upscaled_from_file=path.name)
            target = out_dir / f"{path.stem}-x{request.effective_scale:g}.png"
            print(write_png_atomic(out, target, params, meta))
            if not quiet:
                print(f"{path.name}: {image.width}x{image.height} -> {out.width}x{out.height} with {name} "
                      f"in {result.timings['total']:.1f}s", file=sys.stderr)
    except Cancelled:
        print("\nCancelled; the image being upscaled was not saved.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0
