"""A Redis job's progress counts the steps that really run, as the window shows them."""

from __future__ import annotations

from typing import Any

import pytest

from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress
from heyim_desktop.scale.worker import progress_reporter


class Recorded:
    def __init__(self) -> None:
        self.reports: list[tuple[str, int, int]] = []

    def progress(self, job_id: str, step: int, total: int) -> None:
        self.reports.append((job_id, step, total))


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img"])
def test_progress_in_redis_counts_every_step_that_runs_once(tiny_engine: Any, img2img: bool) -> None:
    from PIL import Image

    extra: dict[str, Any] = {"init_image": Image.new("RGB", (64, 64), (90, 20, 10)), "strength": 0.5} if img2img else {}
    request = GenerationRequest(prompt="a fox", steps=4, count=2, width=64, height=64, seed=3, scheduler="Euler",
                                **extra)
    records = Recorded()
    report = progress_reporter(records, "job-1", every_s=0.0)  # every step, to see them all
    steps: list[Progress] = []

    def both(p: Progress) -> None:
        steps.append(p)
        report(p)

    tiny_engine.generate(request, progress=both)
    ran = len(steps)  # 4 steps x 2 images; image-to-image at strength 0.5 runs 2 of them per image
    assert ran == (4 if img2img else 8)
    assert records.reports[-1] == ("job-1", ran, ran)
    assert [step for _, step, _ in records.reports] == list(range(1, ran + 1))
    assert {total for _, _, total in records.reports} == {ran}
    assert steps[-1].fraction == 1.0


def test_reports_are_throttled_but_the_last_step_always_lands() -> None:
    records = Recorded()
    report = progress_reporter(records, "job-2", every_s=3600.0)
    for step in range(1, 7):
        report(Progress(step=step, total=6, elapsed=0.1 * step, image_index=(step - 1) // 3, image_count=2))
    assert records.reports == [("job-2", 1, 6), ("job-2", 6, 6)]
