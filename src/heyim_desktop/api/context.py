"""What the routes share: the job queue, the model catalog and the current default model."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from heyim_desktop.api import a1111_lists
from heyim_desktop.api.mapping import ApiError
from heyim_desktop.core.jobs import JobQueue

if TYPE_CHECKING:
    from heyim_desktop.core.host import EngineHost
    from heyim_desktop.core.lora import NetworkFinder
    from heyim_desktop.models.hashes import ModelHashes
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.store.styles import StyleBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """A model the API offers: ``name`` for people and A1111 clients, ``ref`` for jobs."""

    name: str
    ref: str
    path: str | None = None
    #: The model library's base ("SD1", "SDXL", "SDXL-refiner"...), when known.
    base: str | None = None


ModelCatalog = Callable[[], Sequence[ModelChoice]]
#: A fixed model reference, or a callable giving the current one (e.g. the window's selection).
DefaultModel = Union[str, Callable[[], Optional[str]], None]


def fixed_catalog(*choices: ModelChoice) -> ModelCatalog:
    return lambda: choices


def library_catalog(library: "ModelLibrary", *, also: Sequence[ModelChoice] = ()) -> ModelCatalog:
    """The ready models of the model library (read afresh each time), plus ``also``."""

    def catalog() -> list[ModelChoice]:
        out = list(also)
        known = {c.ref for c in out}
        for info in library.list():
            if info.ready and info.ref not in known:
                path = None if info.kind == "demo" else info.ref
                out.append(ModelChoice(name=info.name, ref=info.ref, path=path, base=info.base))
        return out

    return catalog


class ApiContext:
    """State behind the routes. ``host`` (optional) is only read, to report the loaded model."""

    def __init__(self, queue: JobQueue, *, models: ModelCatalog, default_model: DefaultModel = None,
                 host: "EngineHost | None" = None, styles: "StyleBook | None" = None,
                 hashes: "ModelHashes | None" = None, networks: "NetworkFinder | None" = None) -> None:
        from heyim_desktop.core.lora import NetworkFinder

        self.queue = queue
        #: Resolves <lora:NAME> tags and embedding words against the model library.
        self.networks = networks or NetworkFinder(lambda name: None)
        self.models = models
        self.host = host
        self._styles = styles
        self._hashes = hashes
        #: CLIP_stop_at_last_layers set through POST /sdapi/v1/options: the clip skip of later jobs.
        self.clip_skip = 1
        #: The device, precision and memory settings models load with ("device", "precision", "memory":
        #: serve's flags, the window's Preferences), for /sdapi/v1/cmd-flags; {} when unknown.
        self.engine_settings: Callable[[], dict[str, str]] = dict
        # The AUTOMATIC1111 lists that other features fill (see a1111_lists).
        self.upscalers: Callable[[], list[dict[str, Any]]] = a1111_lists.upscalers
        self.latent_upscale_modes: Callable[[], list[dict[str, Any]]] = a1111_lists.latent_upscale_modes
        self.loras: Callable[[], list[dict[str, Any]]] = lambda: a1111_lists.loras(self.networks)
        self.embeddings: Callable[[], dict[str, Any]] = lambda: a1111_lists.embeddings(self.networks)
        self._hashing: set[str] = set()
        self._lock = threading.Lock()
        self.waiting: set[int] = set()  # ids of jobs whose HTTP clients are waiting
        self.stopping = threading.Event()
        from heyim_desktop.api.limits import PixelBudget

        self.pixels = PixelBudget()  # input pixels being decoded or held by this server's queued jobs
        self._follow = default_model if callable(default_model) else None
        self._chosen = None if callable(default_model) else default_model

    @property
    def default_model(self) -> str | None:
        """The model reference used when a request names none.

        A model chosen through ``POST /sdapi/v1/options`` wins; otherwise the fixed reference or
        the callable given at construction (the app passes "the model selected in the window").
        None leaves the choice to the worker's EngineHost.
        """
        with self._lock:
            chosen, follow = self._chosen, self._follow
        if chosen is not None:
            return chosen
        return follow() if follow is not None else None

    @default_model.setter
    def default_model(self, ref: str | None) -> None:
        with self._lock:
            self._chosen = ref

    def cancel_waiting(self) -> int:
        """Cancel every job an HTTP client of this server waits for (the server is stopping)."""
        self.stopping.set()
        with self._lock:
            ids = list(self.waiting)
        return sum(1 for job_id in ids if self.queue.cancel(job_id))

    def resolve(self, wanted: str | None, field: str) -> str | None:
        """The reference of the model a client named (by name, title or reference), or the default."""
        if wanted is None or not wanted.strip():
            return self.default_model
        choice = self.find(wanted)
        if choice is None:
            names = ", ".join(c.name for c in self.models()) or "none"
            raise ApiError(422, f"{field}: unknown model {wanted!r}; available: {names}", field)
        return choice.ref

    def resolve_refiner(self, wanted: str | None, field: str) -> str | None:
        """The reference of the refiner a client named; None when it named none."""
        if wanted is None or not wanted.strip():
            return None
        return self.resolve(wanted, field)

    def find(self, wanted: str) -> ModelChoice | None:
        wanted = wanted.strip()
        # A1111 titles look like "name.safetensors [hash]": match on the part before the hash.
        bare = wanted.split(" [", 1)[0]
        for choice in self.models():
            if wanted in (choice.name, choice.ref, choice.path) or bare == choice.name:
                return choice
        return None

    def name_of(self, ref: str | None) -> str | None:
        if ref is None:
            return None
        for choice in self.models():
            if ref in (choice.ref, choice.path):
                return choice.name
        return ref

    # -- prompt styles and model hashes ------------------------------------------------------------
    @property
    def styles(self) -> "StyleBook":
        if self._styles is None:
            from heyim_desktop.store.styles import StyleBook

            self._styles = StyleBook.default()
        return self._styles

    @property
    def hashes(self) -> "ModelHashes":
        if self._hashes is None:
            from heyim_desktop.models.hashes import shared_hashes

            self._hashes = shared_hashes()
        return self._hashes

    @staticmethod
    def model_path(ref: str | None) -> Path | None:
        """The file or folder behind a model reference (the demo model lives in the cache)."""
        if not ref:
            return None
        from heyim_desktop.core.loading import DEMO_REF

        if ref == DEMO_REF:
            from heyim_desktop.core.paths import demo_model_dir

            return demo_model_dir()
        path = Path(ref).expanduser()
        return path if path.exists() else None

    def model_sha256(self, ref: str | None, *, wait: bool) -> str | None:
        """The model's SHA-256: computed now when ``wait`` (slow the first time), else only if known
        (and then hashed in the background for the next call)."""
        path = self.model_path(ref)
        if path is None:
            return None
        if wait:
            try:
                return self.hashes.sha256(path)
            except OSError as exc:
                log.warning("cannot hash %s: %s", path, exc)
                return None
        known = self.hashes.cached_sha256(path)
        if known is None:
            self._hash_later(path)
        return known

    def _hash_later(self, path: Path) -> None:
        key = str(path)
        with self._lock:
            if key in self._hashing:
                return
            self._hashing.add(key)

        def run() -> None:
            try:
                self.hashes.sha256(path)
            except OSError as exc:
                log.warning("cannot hash %s: %s", path, exc)
            finally:
                with self._lock:
                    self._hashing.discard(key)

        threading.Thread(target=run, name="heyim-model-hash", daemon=True).start()

    @property
    def loaded_ref(self) -> str | None:
        return self.host.loaded_ref if self.host is not None else None
