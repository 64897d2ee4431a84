"""Downloading a catalogue model from the Hugging Face Hub: resumable, verified, all-or-nothing.

huggingface_hub does the HTTP (headers, auth, redirects, Range resume after a dropped
connection). HeyIm drives it file by file rather than through ``snapshot_download`` because it
needs what that call does not give: partial files that survive a cancel or a restart (resumed
next time), a free-space check for the whole model before the first byte, a cancel token,
verification of every file against the hub's sha256 (LFS files) or git blob sha1 (small files),
and a model folder that appears only when complete (staged in a hidden folder, then renamed).

An entry with extra sources (a GGUF variant: the base repository's folder without its transformer
weights, plus one GGUF file from another repository) is planned and fetched the same way, into the
same staging folder: one plan, one free-space check, one all-or-nothing model folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.cancel import CancelToken, Cancelled
from heyim_desktop.core.errors import ModelError, StorageError
from heyim_desktop.core.model_files import is_checkpoint_candidate
from heyim_desktop.core.storage import disk_full, full_reason, writing
from heyim_desktop.models.catalogue import CatalogueEntry, ExtraSource
from heyim_desktop.models.inspect import inspect_folder
from heyim_desktop.models.library import app_models_dir
from heyim_desktop.models.types import ModelInfo, ModelStatus

log = logging.getLogger(__name__)
SPACE_MARGIN = 256 * 1024 * 1024
VERIFIED = ".heyim-verified.json"
#: Written into a downloaded model: where it came from and every file's hash, for `models verify`.
MANIFEST = ".heyim-download.json"


class DownloadError(ModelError):
    """The download failed (network, hub) or a file failed verification."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # where the file goes, relative to the model folder (the staging folder while downloading)
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # small files: the git blob id
    #: Files of an extra source: its repository, commit and the file's name there ("": the plan's own).
    repo_id: str = ""
    commit: str = ""
    source_path: str = ""


@dataclass(frozen=True)
class DownloadPlan:
    entry: CatalogueEntry
    commit: str  # the base repository's
    files: tuple[RemoteFile, ...]

    @property
    def source_commits(self) -> dict[str, str]:
        """The extra sources' commits, by repository (empty for a single-repository entry)."""
        return {f.repo_id: f.commit for f in self.files if f.repo_id}

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class DownloadProgress:
    done_bytes: int
    total_bytes: int
    file: str
    files_done: int
    files_total: int
    bytes_per_s: float


ProgressFn = Callable[[DownloadProgress], None]


def hub_endpoint() -> str:
    """HF_ENDPOINT read at call time (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def _repo_info(api: Any, repo_id: str, revision: str) -> Any:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.model_info(repo_id, revision=revision, files_metadata=True)
    except HfHubHTTPError as exc:
        raise DownloadError(f"The hub refused {repo_id}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # httpx errors, JSON errors: the world's, not ours
        raise DownloadError(f"Cannot reach the hub for {repo_id}: {exc}") from None


def _remote(sib: Any, path: str, **source: str) -> RemoteFile:
    _check_relative(path)
    lfs = sib.lfs
    size = lfs.size if lfs else sib.size
    if size is None:
        raise DownloadError(f"The hub gave no size for {sib.rfilename}.")
    return RemoteFile(path, int(size), lfs.sha256 if lfs else None, None if lfs else sib.blob_id, **source)


def _check_relative(path: str) -> None:
    """A file's place in the model folder must stay inside it (names come from the hub's file list)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise DownloadError(f"The hub listed a file HeyIm will not write: {path!r}.")


def _extra_file(api: Any, source: ExtraSource) -> RemoteFile:
    """The one file of ``source`` its pattern matches: none or several is an error, before any byte."""
    info = _repo_info(api, source.repo_id, source.revision)
    pattern = source.pattern.lower()
    # A pattern without a folder looks at the repository's top level only (some GGUF repositories also
    # hold a diffusers folder, whose text encoder could be a GGUF file of the same quantization).
    top_only = "/" not in pattern
    found = sorted((s for s in info.siblings or [] if fnmatch.fnmatchcase(s.rfilename.lower(), pattern)
                    and not (top_only and "/" in s.rfilename)), key=lambda s: s.rfilename)
    if not found:
        raise DownloadError(f"{source.repo_id} has no file matching {source.pattern!r}; the catalogue entry needs "
                            "updating (the file may have been renamed or removed).")
    if len(found) > 1:
        names = ", ".join(s.rfilename for s in found)
        raise DownloadError(f"{source.repo_id} has {len(found)} files matching {source.pattern!r} ({names}); "
                            "HeyIm needs exactly one and will not guess.")
    if info.sha is None:
        raise DownloadError(f"The hub gave no commit for {source.repo_id}.")
    return _remote(found[0], source.dest, repo_id=source.repo_id, commit=info.sha, source_path=found[0].rfilename)


def plan_download(entry: CatalogueEntry, *, endpoint: str | None = None) -> DownloadPlan:
    """Ask the hub for the exact files, sizes and hashes (one small request per repository, no weights)."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise DownloadError("Downloads are off: HF_HUB_OFFLINE is set in the environment.")

    api = HfApi(endpoint=endpoint or hub_endpoint())
    info = _repo_info(api, entry.repo_id, entry.revision)
    files = []
    for sib in info.siblings or []:
        name = sib.rfilename
        if any(fnmatch.fnmatch(name, pat) for pat in entry.files) and not any(
                fnmatch.fnmatch(name, pat) for pat in entry.exclude):
            files.append(_remote(sib, name))
    if not files or info.sha is None:
        raise DownloadError(f"{entry.repo_id} has none of the expected files.")
    extra = [_extra_file(api, source) for source in entry.extra_sources]
    taken = {f.path for f in files}
    clash = [f.path for f in extra if f.path in taken]
    if clash:
        raise DownloadError(f"{entry.name}: {clash[0]} would come from two repositories.")
    # The base folder first, then each extra source (each file carries its own repository's commit).
    return DownloadPlan(entry, info.sha, (*sorted(files, key=lambda f: f.path), *extra))


def hash_ok(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256:
        h = hashlib.sha256()
        expected = remote.sha256
    elif remote.git_sha1:
        h = hashlib.sha1(f"blob {remote.size}\0".encode())
        expected = remote.git_sha1
    else:
        return True
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == expected


class _Meter:
    """Progress sink handed to huggingface_hub as its ``tqdm_class``: counts bytes, checks cancel."""

    def __init__(self, on_bytes: Callable[[int], None], **_kwargs: Any) -> None:
        self.on_bytes = on_bytes

    def __enter__(self) -> _Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int | float | None = 1) -> None:
        self.on_bytes(int(n or 0))

    def close(self) -> None:
        return None


class Downloader:
    """One model download. ``run()`` returns the complete model's ModelInfo, or raises
    Cancelled (partial files kept for resuming), DownloadError, or StorageError."""

    def __init__(self, plan: DownloadPlan, *, dest_dir: Path | None = None, endpoint: str | None = None,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                 report_every_s: float = 0.1) -> None:
        self.plan = plan
        self.report_every_s = report_every_s  # progress is throttled so a UI is not flooded
        if dest_dir is None:
            dest_dir = app_models_dir() / "upscalers" if plan.entry.kind == "upscaler" else app_models_dir()
        self.dest_dir = dest_dir
        self.endpoint = endpoint or hub_endpoint()
        self.progress = progress
        self.cancel = cancel or CancelToken()
        self.target = self.dest_dir / plan.entry.folder_name
        self.staging = self.dest_dir / f".{plan.entry.folder_name}.partial"
        self._done = 0
        self._files_done = 0
        self._started = time.monotonic()
        self._last_report = 0.0

    def _verified(self) -> dict[str, Any]:
        """The progress record of an earlier try at the same base revision ({} when there is none).

        An extra source that moved to another commit since then has its files (and partial file)
        dropped from the staging folder, so they are fetched again; the base folder's stay."""
        try:
            data = json.loads((self.staging / VERIFIED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("_commit") != self.plan.commit:
            return {}
        before = data.get("_sources")
        before = before if isinstance(before, dict) else {}
        for remote in self.plan.files:
            if remote.repo_id and before.get(remote.repo_id) != remote.commit:
                data.pop(remote.path, None)
                for stale in (self.staging / remote.path, self.staging / (remote.path + ".part")):
                    stale.unlink(missing_ok=True)
        if before != self.plan.source_commits:
            data["_sources"] = self.plan.source_commits
            (self.staging / VERIFIED).write_text(json.dumps(data), encoding="utf-8")
        return data

    def _mark_verified(self, done: dict[str, Any], path: str) -> None:
        done[path] = "ok"
        (self.staging / VERIFIED).write_text(json.dumps(done), encoding="utf-8")

    def _report(self, current: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None or (not force and now - self._last_report < self.report_every_s):
            return
        self._last_report = now
        rate = self._done / max(1e-6, now - self._started)
        self.progress(DownloadProgress(self._done, self.plan.total_bytes, current, self._files_done,
                                       len(self.plan.files), rate))

    def check_space(self) -> None:
        """Free space for what is still to fetch (partial files already count), before any byte."""
        have = 0
        for f in self.plan.files:
            for p in (self.staging / f.path, self.staging / (f.path + ".part")):
                if p.is_file():
                    have += p.stat().st_size
        needed = max(0, self.plan.total_bytes - have) + SPACE_MARGIN
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dest_dir).free
        if free < needed:
            raise StorageError(
                f"Not enough free space for {self.plan.entry.title}: {needed / 1e9:.2f} GB needed in "
                f"{self.dest_dir}, {free / 1e9:.2f} GB free."
            )

    def run(self) -> ModelInfo:
        from filelock import FileLock, Timeout

        if self.target.exists():
            raise ModelError(f"{self.target} already exists; delete it first to download it again.")
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.staging) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise DownloadError(f"{self.plan.entry.title} is already being downloaded (by another HeyIm window or command).") from None
        try:
            with writing(self.dest_dir, f"the download of {self.plan.entry.title}"):
                return self._run()
        finally:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

    def _run(self) -> ModelInfo:
        self.check_space()
        self.staging.mkdir(parents=True, exist_ok=True)
        verified = self._verified()
        if not verified:
            if any(self.staging.iterdir()):
                # Leftovers from another revision of the repo: resuming them would mix two versions.
                shutil.rmtree(self.staging)
                self.staging.mkdir()
            verified = {"_commit": self.plan.commit, **({"_sources": self.plan.source_commits}
                                                         if self.plan.source_commits else {})}
            (self.staging / VERIFIED).write_text(json.dumps(verified), encoding="utf-8")
        for remote in self.plan.files:
            self.cancel.raise_if_cancelled()
            final = self.staging / remote.path
            if verified.get(remote.path) == "ok" and final.is_file() and final.stat().st_size == remote.size:
                self._done += remote.size
            else:
                self._fetch(remote, final)
                self._mark_verified(verified, remote.path)
            self._files_done += 1
            self._report(remote.path, force=True)
        return self._finish()

    def _fetch(self, remote: RemoteFile, final: Path) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import get_hf_file_metadata, http_get

        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        resume = part.stat().st_size if part.is_file() else 0
        if resume > remote.size:
            part.unlink()
            resume = 0
        base = self._done

        def on_bytes(n: int) -> None:
            self._done += n
            self.cancel.raise_if_cancelled()  # stops mid-file; the .part file stays for resuming
            self._report(remote.path)

        meter = lambda **kw: _Meter(on_bytes, **kw)  # noqa: E731 - huggingface_hub calls cls(**kwargs)
        repo_id, revision = remote.repo_id or self.plan.entry.repo_id, remote.commit or self.plan.commit
        url = hf_hub_url(repo_id, remote.source_path or remote.path, revision=revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, endpoint=self.endpoint)
            self._done = base + resume
            with open(part, "ab") as fh:
                http_get(meta.location, fh, resume_size=resume, expected_size=remote.size, tqdm_class=meter,  # type: ignore[arg-type]
                         displayed_filename=remote.path)
        except Cancelled:
            raise
        except OSError as exc:
            if "Consistency check failed" in str(exc):
                part.unlink(missing_ok=True)  # wrong length: an error page or a damaged transfer, useless for resuming
                raise DownloadError(f"{remote.path} did not arrive intact (wrong size); try again.") from None
            reason = full_reason(exc)
            if reason:  # the .part file stays in the hidden staging folder, for resuming once space is freed
                raise disk_full(self.dest_dir, f"the download of {remote.path}", reason) from None
            raise DownloadError(f"Download of {remote.path} failed: {exc}") from None
        except Exception as exc:  # httpx/hub errors after huggingface_hub's own retries
            raise DownloadError(f"Download of {remote.path} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self._done = base + remote.size
        if part.stat().st_size != remote.size or not hash_ok(part, remote):
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{remote.path} failed verification against the hub's checksum and was discarded; try again."
            )
        os.replace(part, final)

    def _finish(self) -> ModelInfo:
        root = self.staging / self.plan.entry.subfolder if self.plan.entry.subfolder else self.staging
        (self.staging / VERIFIED).unlink(missing_ok=True)
        if self.plan.entry.kind == "upscaler":
            return self._finish_upscaler(root)
        info = inspect_folder(root, "app", name=self.plan.entry.folder_name)
        if info is None or info.status is ModelStatus.INCOMPLETE:
            problem = info.problem if info else "the files do not form a model"
            raise DownloadError(f"{self.plan.entry.title} downloaded but is not usable: {problem}")
        self._write_manifest(root)
        os.replace(root, self.target)  # the model appears complete, or not at all
        if root != self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        log.info("downloaded %s to %s", self.plan.entry.repo_id, self.target)
        return inspect_folder(self.target, "app", name=self.plan.entry.folder_name) or info

    def _write_manifest(self, root: Path) -> None:
        entry = self.plan.entry
        files: list[dict[str, Any]] = []
        for f in self.plan.files:
            row: dict[str, Any] = {"path": f.path[len(entry.subfolder) + 1:] if entry.subfolder else f.path,
                                   "size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1}
            if f.repo_id:  # from an extra source: where it came from, as it was named there
                row.update(repo_id=f.repo_id, commit=f.commit, source_path=f.source_path)
            files.append(row)
        manifest: dict[str, Any] = {"repo_id": entry.repo_id, "commit": self.plan.commit, "files": files}
        if entry.extra_sources:
            manifest["sources"] = [{"repo_id": entry.repo_id, "commit": self.plan.commit},
                                   *({"repo_id": r, "commit": c} for r, c in self.plan.source_commits.items())]
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    def _finish_upscaler(self, root: Path) -> ModelInfo:
        """An upscaler download is a folder holding its one model file (found by models/upscalers)."""
        from heyim_desktop.models.upscalers import inspect_upscaler

        files = [root / f.path for f in self.plan.files if is_checkpoint_candidate(root / f.path)]
        infos = [inspect_upscaler(p, "app") for p in files]
        if not infos or not all(i.ready for i in infos):
            problem = next((i.problem for i in infos if not i.ready), "no model file arrived")
            raise DownloadError(f"{self.plan.entry.title} downloaded but is not usable: {problem}")
        self._write_manifest(root)
        os.replace(root, self.target)
        if root != self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        log.info("downloaded the upscaler %s to %s", self.plan.entry.repo_id, self.target)
        return inspect_upscaler(self.target / Path(files[0]).relative_to(root), "app")

    def discard_partial(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def download_model(entry: CatalogueEntry, *, dest_dir: Path | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None, endpoint: str | None = None) -> ModelInfo:
    plan = plan_download(entry, endpoint=endpoint)
    return Downloader(plan, dest_dir=dest_dir, endpoint=endpoint, progress=progress, cancel=cancel).run()
