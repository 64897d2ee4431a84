"""The command line: ``heyim-desktop`` (the window) and its subcommands.

Same code paths as the GUI: requests are validated by GenerationRequest, images are made by
the engines in ``core`` and written by ``core.output``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from heyim_desktop import __version__
from heyim_desktop.core.devices import MEMORY_HELP, MEMORY_MODES, PRECISION_HELP, PRECISIONS

log = logging.getLogger("heyim_desktop.cli")

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_RUNTIME = 4
EXIT_CANCELLED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(EXIT_USAGE, f"heyim-desktop: error: {message}\n")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="heyim-desktop", description="Local Stable Diffusion image generation.")
    parser.add_argument("--version", action="version", version=f"HeyIm Desktop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--data-dir", help="keep history, models and settings in this folder")
    parser.add_argument("--self-test", action="store_true",
                        help="open the window, make one image with the tiny demo model in a throwaway "
                             "data folder, check it reached history, and exit (0 = working)")
    parser.add_argument("--coreml-smoke", action="store_true",
                        help="macOS: check that Core ML works in this app (a tiny model compiles, loads on the "
                             "Neural Engine and predicts) and exit (0 = working)")
    parser.add_argument("--open", metavar="IMAGE", dest="open_image",
                        help="open the window with this PNG/JPEG (as input image, or to load its settings)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    gen = sub.add_parser("generate", help="make images from a prompt (and optionally an input image)")
    gen.add_argument("--prompt", "-p", required=True, help="what to draw")
    gen.add_argument("--negative", "-n", default="", help="what to avoid")
    src = gen.add_mutually_exclusive_group()
    src.add_argument("--model", "-m", help="a diffusers-format model folder or a .safetensors checkpoint")
    src.add_argument("--demo", action="store_true", help="use the built-in tiny random model (makes abstract noise)")
    gen.add_argument("--image", "-i", help="input image for image-to-image")
    gen.add_argument("--strength", type=float, default=0.75, help="image-to-image strength in (0, 1] (default 0.75)")
    gen.add_argument("--lora", action="append", default=[], metavar="PATH_OR_NAME[:WEIGHT]",
                     help="apply a LoRA (a .safetensors file, or its name in the model library), weight 1 unless "
                          "given; repeat for several. <lora:NAME:WEIGHT> in the prompt works too")
    gen.add_argument("--mask", help="inpainting: repaint the white part of this mask image over --image")
    gen.add_argument("--mask-blur", type=int, default=4, help="soften the mask's edge by this many pixels (default 4)")
    gen.add_argument("--invert-mask", action="store_true", help="repaint the black part of the mask instead")
    gen.add_argument("--fill", default="original", choices=("original", "fill", "noise", "nothing"),
                     help="what the masked area starts from: the original (default), its blurred surroundings, "
                          "latent noise or nothing")
    gen.add_argument("--only-masked", action="store_true",
                     help="repaint only a crop around the mask, at the model's size (fine detail in big images)")
    gen.add_argument("--padding", type=int, default=32, help="pixels around the mask in --only-masked (default 32)")
    gen.add_argument("--extend", metavar="LEFT,TOP,RIGHT,BOTTOM",
                     help="outpainting: grow --image's canvas by these pixels (multiples of 8) and paint the border")
    gen.add_argument("--control", action="append", default=[], metavar="MODEL:IMAGE[:WEIGHT]",
                     help="guide by a ControlNet or T2I-Adapter (folder or .safetensors) and its control image; repeatable")
    gen.add_argument("--control-preprocessor", action="append", default=[], metavar="NAME",
                     help="make the control map from the image: canny, scribble_xdog, lineart_standard, tile_resample, "
                          "shuffle, inpaint, ..., depth_midas / depth_anything_v2 (need a transformers depth model in "
                          "models/ControlNet/annotator), openpose (needs body_pose_model.safetensors there), openpose_hand / openpose_face / openpose_faceonly / openpose_full (also hand_pose_model.safetensors / facenet.safetensors beside it) (default none: the image already is a map); once for all units or once each")
    gen.add_argument("--control-start", action="append", type=float, default=[], metavar="FRACTION",
                     help="fraction of the steps where ControlNet starts acting (default 0)")
    gen.add_argument("--control-end", action="append", type=float, default=[], metavar="FRACTION",
                     help="fraction of the steps where ControlNet stops acting (default 1)")
    gen.add_argument("--control-mode", action="append", default=[], choices=("balanced", "prompt", "controlnet"),
                     help="balanced (default), prompt (my prompt is more important), controlnet (ControlNet is more important)")
    gen.add_argument("--control-pixel-perfect", action="store_true",
                     help="run the preprocessors at the resolution the image size asks for (the extension's Pixel Perfect)")
    gen.add_argument("--steps", type=int, default=None,
                     help="denoising steps, 1 to 150 (default 30; Z-Image, FLUX.2, SD 3.5: the family's recommended)")
    gen.add_argument("--cfg", type=float, default=None,
                     help="guidance scale, 0 to 30 (default 7.5; 1 or less: off; Z-Image, FLUX.2, SD 3.5: the family's)")
    gen.add_argument("--seed", type=int, default=None, help="0 to 4294967295 (default: random)")
    gen.add_argument("--scheduler", "-s", default=None, help="DPM++ 2M (default), DPM++ 2M Karras, Euler, Euler a, DDIM, PNDM, LMS, UniPC, LCM")
    gen.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT, multiples of 8 (default: the model's size)")
    gen.add_argument("--count", type=int, default=1, help="images to make, 1 to 16 (seeds seed, seed+1, ...)")
    gen.add_argument("--refiner", metavar="MODEL", default=None,
                     help="an SDXL refiner (folder or .safetensors) that finishes each image")
    gen.add_argument("--refiner-switch", type=float, default=0.8, metavar="FRACTION",
                     help="hand over to the refiner after this fraction of the steps, in (0, 1) (default 0.8)")
    gen.add_argument("--text-encoder", metavar="FILE.gguf", default=None,
                     help="a GGUF text encoder (Qwen3 for Z-Image and FLUX.2 [klein], T5 for SD 3.5) used instead of "
                          "the model's own; it must be the model the folder was made with")
    gen.add_argument("--out", "-o", default="outputs", help="folder for the PNGs (default ./outputs)")
    gen.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu", "coreml"))
    gen.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    gen.add_argument("--memory", default="auto", choices=MEMORY_MODES, help=MEMORY_HELP)
    gen.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    from heyim_desktop.cli_styles import add_generate_arguments, add_styles_parser

    add_generate_arguments(gen)
    add_styles_parser(sub)
    from heyim_desktop.upscale_cli import add_hires_arguments, add_upscale_parser

    add_hires_arguments(gen)
    add_upscale_parser(sub)

    conv = sub.add_parser("convert", help="convert a diffusers SD 1.x/2.x model to Core ML (Apple's layout, fp16)")
    conv.add_argument("model_dir", metavar="MODEL", help="a diffusers-format model folder or a single-file .safetensors checkpoint")
    conv.add_argument("out_dir", metavar="OUT_DIR", help="where the Core ML resources folder goes (new or empty)")
    conv.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT the Core ML model makes (default: the model's own)")
    conv.add_argument("--attention", choices=("split_einsum", "original"), default="split_einsum",
                      help="split_einsum runs best on the Neural Engine, original on the GPU (default split_einsum)")
    conv.add_argument("--batch", type=int, choices=(1, 2), default=2, help="UNet batch: 2 runs guidance in one call (default 2)")
    conv.add_argument("--chunk-unet", action="store_true", help="split the UNet in two halves (UnetChunk1/UnetChunk2)")
    conv.add_argument("--no-encoder", action="store_true", help="skip VAEEncoder (no image-to-image)")
    conv.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    conv.add_argument("--quantize", type=int, choices=(8, 6, 4), default=None, metavar="BITS",
                      help="palettize the UNet's and text encoders' weights to 8, 6 or 4 bits (k-means; 6 is the "
                           "recommended balance for SDXL; 8/6 need macOS 14, 4 needs macOS 15); the VAE stays fp16")
    conv.add_argument("--lora", action="append", default=[], metavar="PATH_OR_NAME[:WEIGHT]",
                      help="bake a LoRA into the converted model (weight 1 unless given); repeat for several. "
                           "Core ML models cannot take LoRAs at run time")
    conv.add_argument("--controlnet", action="append", default=[], metavar="MODEL_DIR",
                      help="also convert this ControlNet (a diffusers folder or .safetensors) into controlnet/, "
                           "with a UNet that takes its residuals (Apple's ControlledUnet); repeat for several")

    demo = sub.add_parser("demo-model", help="write the tiny random model in diffusers format")
    demo.add_argument("dir", help="destination folder (must not exist or be empty)")
    demo.add_argument("--force", action="store_true", help="replace an existing folder")

    history = sub.add_parser("history", help="the image history")
    hsub = history.add_subparsers(dest="history_command")
    move = hsub.add_parser("move", help="move HeyIm's images to another folder and make it the images folder")
    move.add_argument("dest", help="the new images folder")

    from heyim_desktop.models.cli import add_models_parser

    add_models_parser(sub)
    serve = sub.add_parser("serve", help="serve the local HTTP API (HeyIm and AUTOMATIC1111 routes) without the window")
    from heyim_desktop.api.serve import add_arguments as add_serve_arguments

    add_serve_arguments(serve)

    from heyim_desktop.scale.cli import add_parsers as add_scale_parsers

    add_scale_parsers(sub)  # worker, batch: the Redis job queue
    return parser


class _ProgressBar:
    def __init__(self, stream: "object", enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.started = time.perf_counter()

    def status(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)  # type: ignore[call-overload]

    def __call__(self, progress: "object") -> None:
        if not self.enabled:
            return
        step, total = progress.step, progress.total  # type: ignore[attr-defined]
        width = 30
        filled = int(width * step / max(1, total))
        elapsed = time.perf_counter() - self.started
        rate = step / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if step >= total else ""
        print(f"\r[{bar}] {step}/{total} steps  {rate:.1f} it/s  {elapsed:.1f}s", end=end, file=self.stream, flush=True)  # type: ignore[call-overload]


def _fail(message: str, code: int) -> int:
    print(f"heyim-desktop: error: {message}", file=sys.stderr)
    return code


def _edit_arguments(args: argparse.Namespace, init_image: object) -> tuple[object, object]:
    """--mask/--extend and their options as the request's inpainting and outpainting values."""
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.masking import Extend, InpaintSpec

    if (args.mask or args.extend) and init_image is None:
        raise InvalidRequest("image", "--mask and --extend need an input image (--image FILE)")
    inpaint = None
    fill = {"noise": "latent noise", "nothing": "latent nothing"}.get(args.fill, args.fill)
    if args.mask:
        from heyim_desktop.core.images import load_mask

        inpaint = InpaintSpec(
            mask=load_mask(args.mask), blur=args.mask_blur, invert=args.invert_mask, fill=fill,
            only_masked=args.only_masked, padding=args.padding,
        )
    elif args.only_masked or args.invert_mask:
        raise InvalidRequest("mask", "--only-masked and --invert-mask need a mask (--mask FILE)")
    extend = Extend.parse(args.extend) if args.extend else None
    return inpaint, extend


def _split_control(spec: str) -> tuple[str, str, float]:
    """MODEL:IMAGE[:WEIGHT], where MODEL and IMAGE may hold colons (C:\\...) when they exist."""
    from heyim_desktop.core.errors import InvalidRequest

    parts = spec.split(":")
    weight = 1.0
    if len(parts) >= 3:
        try:
            weight = float(parts[-1])
            parts = parts[:-1]
        except ValueError:
            pass
    if len(parts) < 2:
        raise InvalidRequest("control", f"--control {spec!r}: expected MODEL:IMAGE[:WEIGHT]")
    cut = next((i for i in range(1, len(parts)) if Path(":".join(parts[:i])).expanduser().exists()), 1)
    return ":".join(parts[:cut]), ":".join(parts[cut:]), weight


def _nth(values: list[Any], i: int, default: Any, name: str, units: int) -> Any:
    from heyim_desktop.core.errors import InvalidRequest

    if not values:
        return default
    if len(values) not in (1, units):
        raise InvalidRequest(name, f"give --{name} once for all ControlNets or once for each ({units}), got {len(values)}")
    return values[0] if len(values) == 1 else values[i]


def _control_arguments(args: argparse.Namespace) -> tuple[Any, ...]:
    """--control and its options as the request's ControlNet units."""
    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.images import load_image

    if not args.control:
        if (args.control_preprocessor or args.control_start or args.control_end or args.control_mode
                or args.control_pixel_perfect):
            raise InvalidRequest("control", "--control-* options need a ControlNet (--control MODEL:IMAGE)")
        return ()
    n = len(args.control)
    units = []
    for i, spec in enumerate(args.control):
        model, image, weight = _split_control(spec)
        units.append(ControlUnit(
            model=str(Path(model).expanduser()), image=load_image(image), weight=weight,
            preprocessor=_nth(args.control_preprocessor, i, "none", "control-preprocessor", n),
            start=_nth(args.control_start, i, 0.0, "control-start", n),
            end=_nth(args.control_end, i, 1.0, "control-end", n),
            mode=_nth(args.control_mode, i, "balanced", "control-mode", n),
            pixel_perfect=bool(args.control_pixel_perfect),
        ))
    return tuple(units)


def _resolve_annotators(request: Any) -> Any:
    """Units with a network preprocessor (depth, openpose) given its model from the library's annotator folder."""
    from heyim_desktop.core.control_preprocess import NETWORK_SPECS

    if not any(u.preprocessor in NETWORK_SPECS for u in request.controlnets):
        return request
    from heyim_desktop.models.cli import _library
    from heyim_desktop.models.controlnets import ControlNetLibrary, resolve_annotators

    return resolve_annotators(request, ControlNetLibrary(_library()))


def _resolve_networks(request: Any, loras: list[str]) -> Any:
    """--lora values and the prompt's <lora:...> tags as files from the model library."""
    from heyim_desktop.core.lora import resolve_networks
    from heyim_desktop.models.cli import _library
    from heyim_desktop.models.networks import NetworkLibrary

    networks = NetworkLibrary(_library())
    return resolve_networks(request, networks.finder(), tuple(_lora_uses(loras, networks)))


def _lora_uses(loras: list[str], networks: Any) -> list[Any]:
    """``--lora PATH_OR_NAME[:WEIGHT]`` values as LoraUse (files, or names in the library)."""
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.lora import LoraUse, parse_lora_spec

    extra = []
    for value in loras:
        ref, weight = parse_lora_spec(value)
        path = networks.find_lora(ref)
        if path is None:
            raise InvalidRequest("lora", f"{ref!r} is neither a .safetensors file nor a LoRA in the model library")
        extra.append(LoraUse(str(path), weight, Path(ref).stem if Path(ref).suffix else ref))
    return extra


def cmd_generate(args: argparse.Namespace) -> int:
    from heyim_desktop.core import Cancelled, CancelToken, GenerationRequest
    from heyim_desktop.core.errors import InvalidRequest

    init_image = None
    if args.image:
        from heyim_desktop.core.images import load_image

        init_image = load_image(args.image)
    if not args.model and not args.demo:
        raise InvalidRequest("model", "pass --model FOLDER, or --demo for the built-in tiny random model")
    inpaint, extend = _edit_arguments(args, init_image)
    controlnets = _control_arguments(args)
    width, height = args.size or (512, 512)
    from heyim_desktop.cli_styles import expand

    prompt, negative = expand(args.prompt, args.negative, args.style)
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        steps=30 if args.steps is None else args.steps,
        guidance=7.5 if args.cfg is None else args.cfg,
        seed=args.seed,
        width=width,
        height=height,
        scheduler=args.scheduler,
        count=args.count,
        init_image=init_image,
        strength=args.strength,
        model=args.model,
        refiner=args.refiner,
        refiner_switch=args.refiner_switch,
        clip_skip=args.clip_skip,
        styles=tuple(args.style),
        inpaint=inpaint,
        extend=extend,
        controlnets=controlnets,
    )
    if args.hires_scale is not None:
        from heyim_desktop.upscale_cli import hires_from_args

        request = request.replace(hires=hires_from_args(args))
    request = _resolve_networks(request, args.lora)
    request = _resolve_annotators(request)
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidRequest("out", f"{out_dir} exists and is not a folder")

    bar = _ProgressBar(sys.stderr, not args.quiet)
    from heyim_desktop.core import paths
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    if args.demo:
        bar.status("Preparing the demo model (tiny, random weights: expect abstract noise)...")
        model_path = paths.ensure_demo_model()
    else:
        model_path = Path(args.model).expanduser()
    bar.status(f"Loading model {model_path.name}...")
    from heyim_desktop.core.loading import load_engine

    t0 = time.perf_counter()
    text_encoder = args.text_encoder
    if text_encoder is None and not args.demo:  # the one chosen for this model in the window, if any
        from heyim_desktop.store.preferences import load_preferences, text_encoder_for

        text_encoder = text_encoder_for(load_preferences(), str(model_path))
    engine = load_engine(str(model_path), device=args.device, precision=args.precision,  # folders and single files
                         text_encoder=text_encoder, memory=args.memory)
    memory = getattr(getattr(engine, "info", None), "memory", "")
    bar.status(f"Model ready in {time.perf_counter() - t0:.1f}s on {engine.name}" + (f"; {memory}." if memory else "."))
    if args.size is None:
        w, h = engine.default_size
        request = request.replace(width=w, height=h)
    request = _family_defaults(request, engine, args)
    request = request.with_seed()
    refiner = None
    if args.refiner:
        bar.status(f"Loading refiner {Path(args.refiner).name}...")
        try:
            refiner = load_engine(str(Path(args.refiner).expanduser()), device=args.device, precision=args.precision)
        except BaseException:
            engine.close()
            raise

    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: object) -> None:
        cancel.cancel()

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        bar.started = time.perf_counter()
        if refiner is not None:
            result = engine.generate(request, progress=bar, cancel=cancel, refiner=refiner)  # type: ignore[call-arg]
        else:
            result = engine.generate(request, progress=bar, cancel=cancel)
    except Cancelled:
        print("\nCancelled; nothing was saved.", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGINT, previous)
        engine.close()
        if refiner is not None:
            refiner.close()
    for warning in result.warnings:
        print(f"heyim-desktop: warning: {warning}", file=sys.stderr)
    from heyim_desktop.core.output import save_result

    for path in save_result(result, out_dir):
        print(path)
    t = result.timings
    bar.status(
        f"Done: {len(result.images)} image(s), seed {request.seed}, {t.get('total', 0):.2f}s "
        f"({t.get('per_step', 0) * 1000:.0f} ms/step)."
    )
    return EXIT_OK


def _family_defaults(request: Any, engine: Any, args: argparse.Namespace) -> Any:
    """The model's recommended steps, guidance and scheduler (few-step models, diffusion-transformer
    families) where the user did not choose them; a note on stderr says what was applied."""
    from heyim_desktop.core.recommended import apply_recommended

    caps = engine.info.capabilities
    applied = apply_recommended(request, caps.recommended, steps_set=args.steps is not None,
                                guidance_set=args.cfg is not None, scheduler_set=args.scheduler is not None)
    if applied.note:
        log.info("%s", applied.note)
        print(f"heyim-desktop: note: {applied.note}; --steps, --cfg and --scheduler override it", file=sys.stderr)
    return applied.request


def cmd_demo_model(args: argparse.Namespace) -> int:
    from heyim_desktop.core.demo_model import build_demo_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    try:
        path = build_demo_model(args.dir, overwrite=args.force)
    except FileExistsError:
        return _fail(f"{args.dir} exists and is not empty (use --force to replace it)", EXIT_USAGE)
    print(path)
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from heyim_desktop.core import Cancelled, CancelToken
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.cancel())

    def report(p: "object") -> None:  # ConversionProgress
        print(f"[{p.stage}/{p.total}] {p.label}  {p.elapsed:.1f}s", file=sys.stderr, flush=True)  # type: ignore[attr-defined]

    try:
        loras: list[Any] = []
        if args.lora:
            from heyim_desktop.models.cli import _library
            from heyim_desktop.models.networks import NetworkLibrary

            loras = _lora_uses(args.lora, NetworkLibrary(_library()))
        out = convert_to_coreml(
            args.model_dir, args.out_dir, size=args.size, attention=args.attention, batch=args.batch,
            chunk_unet=args.chunk_unet, include_encoder=not args.no_encoder, overwrite=args.force,
            progress=report, cancel=cancel, loras=tuple(loras), controlnets=tuple(args.controlnet),
            quantize=args.quantize,
        )
    except Cancelled:
        print("Cancelled; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGINT, previous)
    from heyim_desktop.core.coreml.convert import conversion_notes

    for note in conversion_notes(out):
        print(note, file=sys.stderr)
    print(out)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from heyim_desktop.models.cli import cmd_models as run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from heyim_desktop.api.serve import run_serve

    return run_serve(args)


def cmd_styles(args: argparse.Namespace) -> int:
    from heyim_desktop.cli_styles import cmd_styles as run

    return run(args)


def _scale_command(args: argparse.Namespace) -> int:
    from heyim_desktop.scale.cli import COMMANDS as SCALE_COMMANDS

    return SCALE_COMMANDS[args.command](args)


def _upscale_command(args: argparse.Namespace) -> int:
    from heyim_desktop.upscale_cli import cmd_upscale

    return cmd_upscale(args)


def cmd_history(args: argparse.Namespace) -> int:
    from heyim_desktop.store import HistoryStore
    from heyim_desktop.store.history import default_images_dir
    from heyim_desktop.store.preferences import load_preferences, save_preferences

    if args.history_command != "move":
        return _fail("choose: history move DEST", EXIT_USAGE)
    prefs = load_preferences()
    with HistoryStore.open(images_dir=default_images_dir(prefs.output_folder)) as store:
        report = store.move_images(Path(args.dest))
        save_preferences(prefs.replace(output_folder=str(store.images_dir)))
    print(f"Moved {report.moved} image(s) to {store.images_dir}; {report.kept} left where they are "
          f"(imported or already there), {report.missing} missing. New images go there too.")
    return EXIT_OK


COMMANDS = {
    "generate": cmd_generate,
    "convert": cmd_convert,
    "demo-model": cmd_demo_model,
    "history": cmd_history,
    "models": cmd_models,
    "serve": cmd_serve,
    "styles": cmd_styles,
    "upscale": _upscale_command,
    "worker": _scale_command,
    "batch": _scale_command,
}


def run_gui(args: argparse.Namespace) -> int:
    try:
        from heyim_desktop.ui.app import run_app
    except ImportError as exc:
        return _fail(f"the desktop window is not available ({exc})", EXIT_BUG)
    if getattr(args, "self_test", False):
        from heyim_desktop.ui.self_test import run_self_test

        return run_self_test()
    opened = getattr(args, "open_image", None)
    if opened:
        return run_app(sys.argv[:1], open_files=[opened])
    return run_app(sys.argv[:1])


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _file_arguments(argv: list[str]) -> list[str]:
    """A file manager (or "Open With HeyIm") passes bare image paths: turn them into --open.

    Old macOS launchers also add a ``-psn_...`` process serial number, which means nothing here.
    """
    argv = [a for a in argv if not a.startswith("-psn_")]
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix.lower() in IMAGE_SUFFIXES:
        return ["--open", argv[0], *argv[1:]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["engine-process"]:
        # The frozen app's binary, started again by itself as its engine process (not for people).
        from heyim_desktop.core.process.child import main as engine_main

        return engine_main(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(_file_arguments(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "heyim-desktop: %(message)s",
    )
    if args.data_dir:
        from heyim_desktop.core.paths import DATA_DIR_ENV

        os.environ[DATA_DIR_ENV] = str(Path(args.data_dir).expanduser().resolve())
    from heyim_desktop.core.errors import ModelError, OutOfMemory, StorageError, UserFacingError

    if getattr(args, "coreml_smoke", False):
        from heyim_desktop.core.coreml.smoke import run_coreml_smoke

        return run_coreml_smoke()
    handler = COMMANDS.get(args.command) if args.command else run_gui
    assert handler is not None
    try:
        return handler(args)
    except ModelError as exc:
        return _fail(str(exc), EXIT_MODEL)
    except (OutOfMemory, StorageError) as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    except UserFacingError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
