"""From the panels' values to a queued job: building the request and routing it.

Qt-free on purpose: the window and the tray's Quick Generate build requests the same way, and
both go through :class:`JobRouter` (this computer's JobQueue, or a Redis render queue when
Preferences name one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from heyim_desktop.core.jobs import Job, JobQueue
from heyim_desktop.core.request import GenerationRequest

__all__ = ["JobRouter", "RemoteSubmitter", "Routed", "build_request", "plural", "queue_note"]


def plural(n: int, word: str) -> str:
    """"1 image", "2 images"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_request(values: dict[str, Any], prompt: str, negative_prompt: str = "",
                  init_image: Any = None, extra: dict[str, Any] | None = None) -> GenerationRequest:
    """A validated request from the settings panel's ``values()`` (raises InvalidRequest).

    ``extra``: further request fields, e.g. the styles applied and the input panel's
    inpainting/outpainting fields (``DropPanel.edit_fields()``).
    """
    values = dict(values)
    if init_image is None:
        values.pop("strength", None)  # text-to-image: strength means nothing
    return GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, init_image=init_image,
                             **values, **(extra or {}))


def queue_note(queue: JobQueue, job: Job) -> str:
    """"" when ``job`` runs next with nothing running, else how many jobs are ahead of it."""
    ids = [j.id for j in queue.pending()]
    ahead = ids.index(job.id) if job.id in ids else 0
    running = queue.running
    if running is not None and running.id != job.id:
        ahead += 1
    return f"{plural(ahead, 'job')} ahead" if ahead else ""


class RemoteSubmitter(Protocol):
    @property
    def active(self) -> bool: ...

    def submit(self, request: GenerationRequest) -> None: ...


@dataclass(frozen=True)
class Routed:
    """Where a request went: a local job, or the render queue (``job`` None, ``remote`` True)."""

    job: Job | None
    remote: bool = False


class JobRouter:
    """Local queue or Redis render queue: one decision for every front end in the app."""

    def __init__(self, queue: JobQueue, remote: RemoteSubmitter | None = None) -> None:
        self.queue = queue
        self.remote = remote

    def submit(self, request: GenerationRequest, source: str = "app", *, allow_remote: bool = True) -> Routed:
        """Queue ``request``; raises the queue's UserFacingError (queue full, closed).

        ``allow_remote`` False keeps the job here (Quick Generate copies its image to this clipboard).
        """
        if allow_remote and self.remote is not None and self.remote.active:
            self.remote.submit(request)  # images come back into history as machines finish them
            return Routed(None, remote=True)
        return Routed(self.queue.submit(request, source=source))
