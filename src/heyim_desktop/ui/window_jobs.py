"""The main window's jobs section: building and submitting requests, a job's progress and result, the shown image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.core.jobs import Job
from heyim_desktop.ui.generate import build_request, plural, progress_label, queue_note
from heyim_desktop.ui.result_view import ShownImage, entry_caption
from heyim_desktop.ui.tasks import pil_to_qimage
from heyim_desktop.ui.window_parts import WindowParts


class JobsSection(WindowParts):
    """MainWindow's generating methods (a mixin: ``self`` is the window)."""

    # -- generating ----------------------------------------------------------------------
    def build_request(self) -> Any:
        prompt, negative, styles = self.prompt_panel.final_prompts()  # the chosen styles applied
        extra: dict[str, Any] = {"styles": styles, **self.drop_panel.edit_fields(),
                                 "controlnets": self.controlnet_panel.units()}
        if self.drop_panel.image is None:
            hires = self.settings_panel.hires.settings()
            if hires is not None:  # hires fix is text-to-image only
                extra["hires"] = self.upscaling.resolve_hires(hires)
        return self.lora_picker.resolve(  # <lora:...> tags and embeddings as library files
            build_request(self.settings_panel.values(), prompt, negative, self.drop_panel.image, extra=extra))

    def generate(self) -> Job | None:
        if not self.settings_panel.model_ref():
            self.no_model.show()
            self.show_error("Choose a model first: add a model folder, or try the demo model.",
                            offer_logs=False, kind="warning", cause="model")
            return None
        if self.drop_panel.busy:
            self.status("Still reading the input image...")
            return None
        try:
            request = self.build_request()
        except InvalidRequest as exc:
            hint = "Type a prompt first." if exc.field == "prompt" and not self.prompt_panel.prompt_text() else str(exc)
            self.show_error(hint, offer_logs=False, kind="warning", cause="request")
            if exc.field == "prompt":
                self.prompt_panel.prompt.setFocus()
            return None
        return self.submit(request)

    def submit(self, request: Any, source: str = "app") -> Job | None:
        """Queue a request (the tray and other front ends may call this too)."""
        try:
            routed = self.router.submit(request, source=source, allow_remote=source == "app")
        except UserFacingError as exc:
            self.show_error(str(exc), offer_logs=False, cause="queue")
            return None
        if self.banner.isVisible() and self.banner.kind != "info":
            self.banner.dismiss()  # the next action worked: the old problem is gone
        self.state.remember_settings()
        if routed.job is not None:
            self.settings_panel.remember_seed(request.seed)
            note = queue_note(self.queue, routed.job)
            if note:
                self.status(f"Queued ({note}).")
        return routed.job

    def cancel(self) -> None:
        if self.queue.cancel_running():
            self.status("Cancelling...")

    def _job_started(self, job: Job) -> None:
        self.active_job = job
        self.cancel_button.setEnabled(True)
        self.result_view.start_job("Starting...")

    def _progress(self, job_id: int, done: int, total: int, elapsed: float) -> None:
        job = self.active_job
        if job is not None and int(job.id) == job_id:
            batch = self.model_caps.max_batch if self.model_caps is not None else None
            self.result_view.set_progress(done, total, elapsed, progress_label(job, done, total, batch))

    def _preview(self, job_id: int, image: Any) -> None:
        if self.active_job is not None and int(self.active_job.id) == job_id:
            self.result_view.set_preview(image)

    def _job_ended(self, job: Job) -> bool:
        if self.active_job is None or int(self.active_job.id) != int(job.id):
            return False
        self.active_job = None
        self.cancel_button.setEnabled(False)
        self.result_view.end_job()
        return True

    def _job_finished(self, job: Job) -> None:
        self._job_ended(job)
        result = job.result
        entries: list[Any] = [e for e in job.saved if hasattr(e, "id")]
        if result is not None:
            shown = []
            for i, item in enumerate(result.images):
                entry = entries[i] if i < len(entries) else None
                shown.append(ShownImage(pil_to_qimage(item.image), Path(entry.path) if entry else None, entry,
                                        entry_caption(entry) if entry else f"Seed {item.seed}"))
            self.result_view.show_images(shown)
            t = result.timings.get("total", 0.0)
            self.settings_panel.remember_seed(result.request.seed)
            where = f" Saved in {Path(entries[0].path).parent}." if entries else ""
            self.status(f"Done: {plural(len(result.images), 'image')} in {t:.1f} s, seed {result.request.seed}.{where}")
            if result.warnings:
                self.show_error("\n".join(result.warnings), offer_logs=False, kind="warning", cause="job")
        self.history.model.add_entries(entries)
        self._after_prune()
        self.job_shown.emit(job)

    def _after_prune(self) -> None:
        """The keep-limit may have deleted old images while saving: drop them from the grid and the view."""
        if not self.store.keep_limit:
            return
        shown_ids = [s.entry_id for s in self.result_view.images if s.entry_id is not None]
        alive = {int(e.id) for e in self.store.get_many(shown_ids)} if shown_ids else set()
        self.result_view.remove_entries([i for i in shown_ids if i not in alive])
        if self.history.model.rowCount() != self.store.count(self.history.model.query,
                                                             self.history.model.favourites_only):
            self.history.model.refresh()

    def _job_failed(self, job: Job, message: str) -> None:
        self._job_ended(job)
        self.show_error(message, cause="job")
        self.job_shown.emit(job)

    def _job_cancelled(self, job: Job) -> None:
        if self._job_ended(job) or job.started is not None:
            self.status("Cancelled; nothing was saved.")
        self.job_shown.emit(job)

    def _remote_arrived(self, entries: list[Any]) -> None:
        self.history.model.add_entries(entries)
        self.status(f"{plural(len(entries), 'image')} arrived from the render queue.")

    # -- the shown image -----------------------------------------------------------------
    def _shown_changed(self, shown: ShownImage | None) -> None:
        self.info_panel.show_entry(shown.entry if shown is not None else None)
        self.menu_actions.seed_of_shown.setEnabled(shown is not None and shown.entry is not None)

    def use_shown_seed(self) -> None:
        shown = self.result_view.current()
        if shown is None or shown.entry is None or shown.entry.seed is None:
            self.status("No image with a seed is shown.")
            return
        self.settings_panel.set_seed(int(shown.entry.seed), locked=True)
        self.status(f"Seed {shown.entry.seed} locked: the same settings make the same image.")

    def toggle_info(self) -> None:
        self.info_panel.setVisible(not self.info_panel.isVisible())
        self.menu_actions.image_info.setChecked(self.info_panel.isVisible())

    def open_viewer(self) -> Any:
        """The full-screen viewer on the shown image; arrow keys step through history."""
        from heyim_desktop.ui.viewer import ImageViewer

        shown = self.result_view.current()
        if shown is None:
            self.status("No image to show full screen.")
            return None
        if self.viewer is None:
            self.viewer = ImageViewer(self.history.model)
            self.viewer.entry_shown.connect(self.history.select_entry)
        self.viewer.open_at(shown)
        return self.viewer
