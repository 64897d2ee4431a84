"""Writing files the careful way: one error kind for a full disk, exclusive names, owned temp files.

Every writer in HeyIm maps ENOSPC, EDQUOT and EROFS to :class:`DiskFull` naming the folder,
and leaves no partial file behind. Temp files carry a name no other program uses
(``heyim-<pid>-<random>.part``) so that cleaning up never touches anyone else's file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterator

from heyim_desktop.core.errors import DiskFull, StorageError

log = logging.getLogger(__name__)

_REASONS = {errno.ENOSPC: "full", errno.EROFS: "read-only"}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = "quota"
#: How OS errors look once another library (safetensors, SQLite, a child process) turned them into text.
_TEXT_REASONS = (
    ("no space left", "full"), ("os error 28", "full"), ("storagefull", "full"), ("disk is full", "full"),
    ("disk quota", "quota"), ("os error 122", "quota"), ("quota exceeded", "quota"),
    ("read-only file system", "read-only"), ("os error 30", "read-only"), ("readonlyfilesystem", "read-only"),
)
TEMP_RE = re.compile(r"^heyim-(\d+)-[0-9a-f]{16}(\.[\w.-]+)?\.part$")
#: A temp file of a live process may be this old before cleanup takes it (a process on another machine).
STALE_AFTER_S = 24 * 3600


def full_reason(exc: BaseException) -> str | None:
    """"full" / "quota" / "read-only" when ``exc`` (or its text) is one of those, else None."""
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        return _REASONS[exc.errno]
    text = str(exc).lower()
    for needle, reason in _TEXT_REASONS:
        if needle in text:
            return reason
    return None


def disk_full(folder: Path | str, what: str, reason: str = "full") -> DiskFull:
    if reason == "read-only":
        message = f"Cannot save {what}: {folder} is on a read-only file system. Choose another folder."
    elif reason == "quota":
        message = f"Cannot save {what}: your disk quota is used up in {folder}. Free some space and try again."
    else:
        message = f"The disk is full: cannot save {what} in {folder}. Free some space and try again."
    return DiskFull(message, folder, reason)


def storage_error(exc: BaseException, folder: Path | str, what: str) -> StorageError:
    """The user-facing error for a failed write of ``what`` into ``folder``."""
    reason = full_reason(exc)
    if reason:
        return disk_full(folder, what, reason)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"No permission to save {what} in {folder}. Choose another folder or fix its permissions.")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StorageError(f"Cannot save {what} in {folder}: {detail}.")


@contextlib.contextmanager
def writing(folder: Path | str, what: str) -> Iterator[None]:
    """Turn any OSError inside into the user-facing :func:`storage_error`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, folder, what) from exc


def temp_name(suffix: str) -> str:
    return f"heyim-{os.getpid()}-{secrets.token_hex(8)}{suffix}.part"


def new_temp_file(folder: Path, suffix: str, mode: int = 0o666) -> tuple[int, Path]:
    """Create an empty temp file in ``folder`` (made if needed), exclusively; permissions follow the umask."""
    for _attempt in range(5):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            # Another writer made the folder and, done with it, removed it again between
            # mkdir's two checks: try once more.
            continue
        path = folder / temp_name(suffix)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode), path
        except FileNotFoundError:
            continue  # another process removed the empty temp folder meanwhile: make it again
        except FileExistsError:
            continue
    raise StorageError(f"Cannot create a temporary file in {folder}.")


def place_exclusively(tmp: Path, final: Path, *, tries: int = 10_000) -> Path:
    """Give the finished ``tmp`` its final name without ever replacing a file: ``name``, ``name-1``, ...

    A hard link fails if the name exists, so two processes can never take the same name.
    File systems without hard links get the name reserved with O_EXCL and then replaced (only
    our own empty reservation is ever replaced).
    """
    for n in range(tries):
        candidate = final if n == 0 else final.with_name(f"{final.stem}-{n}{final.suffix}")
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
                raise
            try:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            os.replace(tmp, candidate)
            return candidate
        tmp.unlink()
        return candidate
    raise StorageError(f"Too many files named like {final.name} in {final.parent}.")


def fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, what: str, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` all at once; on any failure the old file stays and no temp is left."""
    path = Path(path)
    folder = path.parent
    with writing(folder, what):
        fd, tmp = new_temp_file(folder, "." + re.sub(r"[^\w.-]", "_", path.name.lstrip("."))[:40], mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(folder)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete HeyIm's own leftover temp files in ``folder`` (dead writer, or older than a day). Returns how many."""
    removed = 0
    try:
        items = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for item in items:
        m = TEMP_RE.match(item.name)
        if not m or not item.is_file(follow_symlinks=False):
            continue
        try:
            old = now - item.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if old or not _pid_alive(int(m.group(1))):
            try:
                os.unlink(item.path)
                removed += 1
            except OSError as exc:
                log.info("could not remove the leftover temp file %s: %s", item.path, exc)
    return removed
