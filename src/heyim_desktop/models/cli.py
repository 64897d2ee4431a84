"""``heyim-desktop models list | import PATH | download NAME | verify NAME``.

Exit codes: 0 fine, 2 bad usage, 3 model problem (missing, corrupt, unsafe, unsupported,
failed verification), 4 disk (no space), 5 download failed (network, hub, checksum),
130 cancelled (a cancelled download keeps its partial files and resumes next time).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, TextIO

EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_DISK, EXIT_DOWNLOAD, EXIT_CANCELLED = 0, 2, 3, 4, 5, 130


def add_models_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list, import, download and verify models")
    msub = models.add_subparsers(dest="models_command", parser_class=type(models))
    ls = msub.add_parser("list", help="every model HeyIm can see, with its status")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--folder", action="append", default=[], help="also scan this folder (repeatable)")
    imp = msub.add_parser("import", help="copy a model file or folder into HeyIm's models folder")
    imp.add_argument("path", help="a .safetensors checkpoint, a pickle checkpoint (.ckpt/.pt/.bin) or a model folder")
    imp.add_argument("--convert", action="store_true",
                     help="convert a pickle checkpoint to .safetensors in a separate restricted process")
    imp.add_argument("--name", default=None, help="import it under this name (default: the file's or folder's own)")
    dl = msub.add_parser("download", help="download a recommended model (run without NAME to see the list)")
    dl.add_argument("name", nargs="?", help="catalogue name, e.g. sd15")
    dl.add_argument("--yes", "-y", action="store_true", help="do not ask before downloading")
    dl.add_argument("--accept-licence", action="store_true",
                    help="accept the model's licence terms (shown first) for models that have them")
    ver = msub.add_parser("verify", help="check a model's files (headers, and hashes for downloads)")
    ver.add_argument("name", help="model name or path, as `models list` shows it")


def _err(message: str, code: int) -> int:
    print(f"heyim-desktop: error: {message}", file=sys.stderr)
    return code


def _library(extra: list[str] | None = None) -> Any:
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.store.preferences import load_preferences

    folders = list(load_preferences().model_folders) + list(extra or [])
    return ModelLibrary(folders)


def _confirm(question: str, stream: TextIO = sys.stdin) -> bool:
    if not stream.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return stream.readline().strip().lower() in ("y", "yes")


def cmd_models(args: argparse.Namespace) -> int:
    from heyim_desktop.core.errors import ModelError, StorageError
    from heyim_desktop.models.download import DownloadError

    handler = {"list": _list, "import": _import, "download": _download, "verify": _verify}.get(args.models_command or "")
    if handler is None:
        return _err("choose one of: models list | import PATH | download NAME | verify NAME", EXIT_USAGE)
    try:
        return handler(args)
    except DownloadError as exc:
        return _err(str(exc), EXIT_DOWNLOAD)
    except StorageError as exc:
        return _err(str(exc), EXIT_DISK)
    except ModelError as exc:
        return _err(str(exc), EXIT_MODEL)


def _list(args: argparse.Namespace) -> int:
    from heyim_desktop.models.controlnets import ControlNetLibrary
    from heyim_desktop.models.networks import NetworkLibrary
    from heyim_desktop.models.types import human_size

    library = _library(args.folder)
    models = (library.list() + NetworkLibrary(library).all() + library.list_upscalers()
              + ControlNetLibrary(library).all())
    if args.json:
        rows = [{"name": m.name, "ref": m.ref, "kind": m.kind, "base": m.base, "quantization": m.quantization,
                 "text_encoder_quantization": m.text_encoder_quantization, "size_bytes": m.size_bytes,
                 "status": m.status.value, "problem": m.problem, "source": m.source,
                 **({"scale": m.scale} if m.kind == "upscaler" else {})} for m in models]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for m in models:
        print(f"{m.name}\t{m.kind_label}\t{m.base}\t{human_size(m.size_bytes) if m.size_bytes else '-'}\t{m.summary}\t{m.ref}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from heyim_desktop.core.model_files import FileKind, sniff
    from heyim_desktop.models.importer import existing_name, import_model

    path = Path(args.path).expanduser()
    if not path.exists():
        return _err(f"{path}: file not found", EXIT_USAGE)
    taken = existing_name(path, name=args.name)
    if taken is not None:  # said before asking about a conversion that could not land anyway
        return _err(f"a model named {taken} already exists; import it under another name with --name NEW_NAME",
                    EXIT_MODEL)
    convert = args.convert
    if path.is_file() and not convert and sniff(path) is FileKind.PICKLE:
        print(f"{path.name} is a pickle checkpoint. Pickles can run code when loaded, so HeyIm never opens them.\n"
              "It can convert the weights to .safetensors in a separate process that only accepts tensors "
              "(torch.load with weights_only=True).", file=sys.stderr)
        convert = _confirm("Convert it now?")
        if not convert:
            return _err(f"{path.name} was not imported (run again with --convert to convert it).", EXIT_MODEL)
    if convert:
        print(f"Converting {path.name} in a separate process...", file=sys.stderr)
    info = import_model(path, convert=convert, name=args.name)
    print(info.ref)
    return EXIT_OK


def _download(args: argparse.Namespace) -> int:
    from heyim_desktop.core.cancel import Cancelled, CancelToken
    from heyim_desktop.models.catalogue import catalogue, describe, find_entry
    from heyim_desktop.models.download import Downloader, DownloadProgress, plan_download
    from heyim_desktop.models.types import human_size

    if not args.name:
        for e in catalogue():
            print(f"{e.name}\t{e.title}\t{e.base}\t{describe(e)}\t{' + '.join(e.repos)}\t{e.note}")
        return EXIT_OK
    entry = find_entry(args.name)
    if entry is None:
        names = ", ".join(e.name for e in catalogue())
        return _err(f"no catalogue model named {args.name!r}; choose one of: {names}", EXIT_USAGE)
    if entry.licence_terms:  # shown and accepted before anything is asked of the hub
        print(f"{entry.title}: licence terms\n\n{entry.licence_terms}\n", file=sys.stderr)
        if not args.accept_licence and not (sys.stdin.isatty() and _confirm("Do you accept these terms?")):
            return _err(f"{entry.name} needs its licence accepted: read the terms above, then run again with "
                        "--accept-licence", EXIT_CANCELLED)
    plan = plan_download(entry)
    licence = f"; licence: {entry.licence}" if entry.licence else ""
    print(f"{entry.title}: {len(plan.files)} files, {human_size(plan.total_bytes)} from {' + '.join(entry.repos)}"
          f"{licence}", file=sys.stderr)
    for f in plan.files:
        if f.repo_id:  # a file from an extra source: say which one was matched, and where it goes
            print(f"  {f.source_path} ({human_size(f.size)}) from {f.repo_id} -> {f.path}", file=sys.stderr)
    if sys.stdin.isatty() and not args.yes and not _confirm("Download it?"):
        return _err("download not started", EXIT_CANCELLED)
    cancel = CancelToken()

    def show(p: DownloadProgress) -> None:
        pct = 100 * p.done_bytes / max(1, p.total_bytes)
        print(f"\r{pct:5.1f}%  {human_size(p.done_bytes)} / {human_size(p.total_bytes)}  "
              f"{human_size(int(p.bytes_per_s))}/s  file {p.files_done}/{p.files_total}", end="", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    try:
        info = Downloader(plan, progress=show, cancel=cancel).run()
    except Cancelled:
        print("\nCancelled; the partial download is kept and resumes next time.", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGINT, previous)
    print(file=sys.stderr)
    print(info.ref)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from heyim_desktop.models.verify import verify_model

    library = _library()
    info = library.find(args.name)
    if info is None:
        from pathlib import Path

        from heyim_desktop.models.inspect import inspect_file, inspect_folder

        path = Path(args.name).expanduser()
        info = (inspect_file(path) if path.is_file() else inspect_folder(path)) if path.exists() else None
        if info is None:
            return _err(f"no model named {args.name!r} (see `heyim-desktop models list`)", EXIT_USAGE)
    problems = verify_model(info, library)
    if problems:
        for problem in problems:
            print(f"{info.name}: {problem}", file=sys.stderr)
        return EXIT_MODEL
    print(f"{info.name}: ok")
    return EXIT_OK
