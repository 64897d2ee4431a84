"""Cooperative cancellation: a token the denoising loop checks every step."""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """A job was cancelled by its user. Not an error: nothing is decoded or saved."""


class CancelToken:
    """Thread-safe flag set by the UI and polled by the worker."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
