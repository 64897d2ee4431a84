"""``heyim-desktop serve``: the API without the window, over a worker thread and the history."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.api.context import ModelCatalog, ModelChoice, library_catalog
from heyim_desktop.api.security import resolve_token
from heyim_desktop.api.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer
from heyim_desktop.core.devices import MEMORY_HELP, MEMORY_MODES, PRECISION_HELP, PRECISIONS
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.loading import DEMO_REF

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help=f"address to listen on (default {DEFAULT_HOST}; anything else opens the API to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", "-m", help="a diffusers-format model folder")
    src.add_argument("--demo", action="store_true", help="serve the built-in tiny random model (makes abstract noise)")
    parser.add_argument("--token", default=None,
                        help="API token (default: $HEYIM_API_TOKEN, else a random per-install token kept in the data folder)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also accept this Host header (a name other machines use to reach this one)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument("--memory", default="auto", choices=MEMORY_MODES, help=MEMORY_HELP)


def _catalog(args: argparse.Namespace) -> tuple[ModelCatalog, str | None, str]:
    """The models offered (the library's, plus --model), the default one, and its name."""
    from heyim_desktop.models.library import ModelLibrary

    library = ModelLibrary()
    if args.demo:
        return library_catalog(library), DEMO_REF, "demo"
    if args.model:
        folder = Path(args.model).expanduser().resolve()
        if not folder.is_dir():
            raise InvalidRequest("model", f"{folder} is not a folder")
        choice = ModelChoice(name=folder.name, ref=str(folder), path=str(folder))
        return library_catalog(library, also=[choice]), choice.ref, choice.name
    ready = [m for m in library.list() if m.ready and m.kind != "demo"]
    if not ready:
        log.warning("no model in the library: requests must name one (see GET /api/models), or pass --model or --demo")
        return library_catalog(library), None, "none"
    return library_catalog(library), ready[0].ref, ready[0].name


def run_serve(args: argparse.Namespace, *, on_ready: Callable[[ApiServer], None] | None = None,
              stop: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set, for tests). Returns the exit code."""
    from heyim_desktop.core import paths
    from heyim_desktop.core.host import EngineHost, WorkerThread
    from heyim_desktop.core.jobs import JobQueue
    from heyim_desktop.core.process.remote import ProcessLoader
    from heyim_desktop.store import HistoryStore
    from heyim_desktop.store.history import default_images_dir
    from heyim_desktop.store.preferences import load_preferences

    if not 0 <= args.port <= 65535:
        raise InvalidRequest("port", f"must be from 0 to 65535, got {args.port}")
    catalog, default_ref, default_name = _catalog(args)
    token, token_source = resolve_token(args.token, paths.data_dir())
    # The same images folder as the window: entries store where each file is either way.
    store = HistoryStore.open(images_dir=default_images_dir(load_preferences().output_folder))
    queue = JobQueue()
    # The model runs in an engine process: a crash or an out-of-memory kill there fails one job
    # and the server stays up; the next job starts a fresh process.
    engines = ProcessLoader(device=args.device, precision=args.precision, memory=args.memory)
    prefs = load_preferences()

    def load(ref: str) -> Any:  # with the GGUF text encoder chosen for it in the window, if any
        from heyim_desktop.store.preferences import text_encoder_for

        return engines.load(ref, text_encoder=text_encoder_for(prefs, ref))

    host = EngineHost(load, default_model=default_ref, upscalers=engines.upscaler)  # upscales too

    def sink(result: Any, job: Any) -> tuple[object, ...]:
        return tuple(store.save_result(result, job))

    worker = WorkerThread(queue, host, sink)
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.models.networks import NetworkLibrary

    server = ApiServer(queue, token=token, models=catalog, default_model=default_ref,
                       engine_host=host, host=args.host or DEFAULT_HOST, port=args.port, extra_hosts=args.allow_host,
                       networks=NetworkLibrary(ModelLibrary()).finder())
    server.context.engine_settings = lambda: {"device": args.device, "precision": args.precision, "memory": args.memory}
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        worker.start()
        server.start()
        where = "the flag" if token_source == "--token" else token_source
        print(f"HeyIm API on {server.url} (model: {default_name}; token from {where}). Ctrl+C stops.",
              file=sys.stderr, flush=True)
        if on_ready is not None:
            on_ready(server)
        stop.wait()
    finally:
        server.stop()
        worker.stop(timeout=30)
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
