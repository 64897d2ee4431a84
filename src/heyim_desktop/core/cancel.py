"""Cooperative cancellation: a token the denoising loop checks every step."""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """A job was cancelled by its user. Not an error: nothing is decoded or saved."""


class CancelToken:
    """Thread-safe flag set by the UI and polled by the worker.

    ``cancel()`` stops the job and throws its work away. Two softer stops exist for the
    AUTOMATIC1111 API: ``interrupt()`` stops too, but the loop decodes the latents it has
    (the partial image is the job's result), and ``skip()`` does that for the image being
    denoised only, then goes on with the next one. An engine that cannot decode early
    treats both as a cancel (``raise_if_cancelled`` raises for an interrupt).
    """

    __slots__ = ("_event", "_partial", "_skip", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._partial = False
        self._skip = False
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            self._partial = False
        self._event.set()

    def interrupt(self) -> None:
        """Stop after this step and keep what is made so far (decoded)."""
        with self._lock:
            if not self._event.is_set():
                self._partial = True
        self._event.set()

    def skip(self) -> None:
        """Finish the current image early (decoded as it is) and go on with the next."""
        with self._lock:
            self._skip = True

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def interrupted(self) -> bool:
        """Stopped, with the partial result wanted."""
        with self._lock:
            return self._event.is_set() and self._partial

    @property
    def skipping(self) -> bool:
        """A skip was asked for and the loop has not acted on it yet."""
        with self._lock:
            return self._skip

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def stop_sampling(self) -> bool:
        """The step loop's check: True ends this image's steps early (interrupt or skip, which
        is consumed); a plain cancel raises :class:`Cancelled`."""
        with self._lock:
            if self._event.is_set():
                if not self._partial:
                    raise Cancelled()
                return True
            if self._skip:
                self._skip = False
                return True
        return False
