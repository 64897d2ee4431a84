"""Hooks around each denoising step, for features that add to the shared loop.

An extension sees the loop's :class:`LoopState` and may change the UNet call before it is
made (inpainting's extra channels, ControlNet's residuals) or the latents after a step
(inpainting's blend). Progress and previews are an extension too. Features that follow
arrive as new extensions built by :func:`extensions_for`, never as ``if``s in the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from heyim_desktop.core.components import Components
    from heyim_desktop.core.conditioning import ImageCond, PromptEncoding, UNetCall
    from heyim_desktop.core.guidance import Guidance
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import ProgressCallback


@dataclass
class LoopState:
    """What one group of images (one batch through the UNet) looks like while it denoises."""

    request: "GenerationRequest"
    components: "Components"
    scheduler: Any
    timesteps: "torch.Tensor"
    latents: "torch.Tensor"
    guidance: "Guidance"
    generators: "list[torch.Generator]"
    seeds: list[int]
    #: Index of the first image of this group within the job.
    first_image: int
    image: "ImageCond"
    #: The clean latents image-to-image started from, and the noise added to them.
    init_latents: "torch.Tensor | None" = None
    noise: "torch.Tensor | None" = None
    #: Index of the step being run (0-based) and its timestep.
    step_index: int = 0
    timestep: "torch.Tensor | None" = None
    #: The job's step count at this run's first step: 0, or where a resumed stage (the
    #: SDXL refiner) picks up; a scheduled prompt reads step ``first_step + step_index``.
    first_step: int = 0
    #: Steps done in the whole job so far, and its total.
    steps_done: int = 0
    steps_total: int = 0
    #: Room for extensions to keep per-group values.
    scratch: dict[str, Any] = field(default_factory=dict)


class Extension(Protocol):
    def before_loop(self, state: LoopState) -> None: ...

    def before_unet(self, state: LoopState, call: "UNetCall") -> None: ...

    def after_step(self, state: LoopState) -> None: ...

    def after_loop(self, state: LoopState) -> None: ...


class BaseExtension:
    """Does nothing at every hook; extensions override the hooks they need."""

    def before_loop(self, state: LoopState) -> None:
        pass

    def before_unet(self, state: LoopState, call: "UNetCall") -> None:
        pass

    def after_step(self, state: LoopState) -> None:
        pass

    def after_loop(self, state: LoopState) -> None:
        pass


class ProgressReporter(BaseExtension):
    """Reports each finished step, with a cheap latent preview at most every ``interval`` s."""

    def __init__(self, callback: "ProgressCallback", *, started: float, previews: bool, interval: float) -> None:
        self.callback = callback
        self.started = started
        self.previews = previews
        self.interval = interval
        self._last_preview = 0.0

    def after_step(self, state: LoopState) -> None:
        from heyim_desktop.core.preview import latents_to_rgb
        from heyim_desktop.core.result import Progress

        now = time.perf_counter()
        preview = None
        if self.previews and now - self._last_preview >= self.interval:
            preview = latents_to_rgb(state.latents[0].float().cpu().numpy())
            self._last_preview = now
        self.callback(
            Progress(state.steps_done, state.steps_total, now - self.started, state.first_image,
                     state.request.count, preview)
        )


def extensions_for(
    request: "GenerationRequest", components: "Components", prompts: "PromptEncoding | None" = None
) -> list[Extension]:
    """The feature extensions a request asks for, in the order they run.

    A scheduled prompt's extension comes first, so the others see each step's text.
    """
    from heyim_desktop.core.controlnet import controlnet_extensions
    from heyim_desktop.core.inpaint import inpaint_extensions
    from heyim_desktop.core.prompt_schedule import schedule_extensions

    scheduled: list[Extension] = [*schedule_extensions(prompts)] if prompts is not None else []
    return [*scheduled, *inpaint_extensions(request, components), *controlnet_extensions(request, components)]
