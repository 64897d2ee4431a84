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

__all__ = ["JobRouter", "RemoteSubmitter", "Routed", "build_request", "plural", "progress_label", "queue_note"]


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


def progress_label(job: Job, done: int, total: int, max_batch: int | None = None) -> str:
    """"Step 5/23", or "Image 2 of 3, step 5/23" when the images of a job run one after another.

    ``done``/``total`` count the denoising steps that really run for the whole job (image-to-image
    runs only ``strength`` of them). The images run one by one when the model's ``max_batch`` is 1;
    without it, the total tells: about ``steps x count`` or about ``steps``.
    """
    request = job.request
    from heyim_desktop.core.upscale_job import UpscaleRequest

    if isinstance(request, UpscaleRequest):  # an upscale counts tiles, not steps
        return f"Step {done}/{total}"
    count = max(1, int(request.count))
    if max_batch is not None and count > 1 and total % count == 0:
        if max_batch == 1:
            per = total // count
            image = min(count, max(1, -(-done // per)))
            return f"Image {image} of {count}, step {done - (image - 1) * per}/{per}"
        return f"Step {done}/{total}"
    expected = max(1, min(int(request.steps * request.strength), request.steps)) if request.is_img2img \
        else max(1, int(request.steps))
    if count > 1 and total % count == 0 and abs(total / count - expected) < abs(total - expected):
        per = total // count
        image = min(count, max(1, -(-done // per)))
        return f"Image {image} of {count}, step {done - (image - 1) * per}/{per}"
    return f"Step {done}/{total}"
