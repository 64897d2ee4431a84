"""Shared-memory blocks for result pixels: the parent creates and unlinks them, the child only writes.

Owning the block on the parent's side means a child killed halfway through a job leaks
nothing: the parent unlinks the block whatever happened.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.shared_memory import SharedMemory


def room_for(size: int) -> bool:
    """Whether a block of ``size`` bytes fits: on Linux /dev/shm is a small tmpfs in many
    containers, and writing past its end kills the writer with SIGBUS."""
    import os

    if not sys.platform.startswith("linux"):
        return True
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= size + (16 << 20)


def create(size: int) -> "SharedMemory":
    from multiprocessing.shared_memory import SharedMemory

    return SharedMemory(create=True, size=max(1, size))


def attach(name: str) -> "SharedMemory":
    """Open the parent's block without letting this process's resource tracker own it."""
    from multiprocessing.shared_memory import SharedMemory

    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg,unused-ignore]
    shm = SharedMemory(name=name)
    if sys.platform != "win32":
        # Before 3.13 attaching registers the block, and the tracker would unlink it when
        # this process exits (and warn about a "leak"): the parent owns it.
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def release(shm: "SharedMemory") -> None:
    try:
        shm.close()
    except BufferError:  # a view still exported; the unlink below still frees the name
        pass
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
