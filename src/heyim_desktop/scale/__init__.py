"""Scale out: one batch rendered by several machines through a Redis job queue.

Built on Dramatiq's Redis broker (delivery, retries, dead-worker recovery); HeyIm keeps its
own records in the same Redis (jobs, results keyed by job id, worker heartbeats) so that a
batch can be watched and collected from any machine. No Qt here, and importing this package
imports neither torch nor redis: the heavy modules load on demand.

Entry points: :func:`heyim_desktop.scale.client.submit_requests`,
:func:`~heyim_desktop.scale.client.batch_status`, :func:`~heyim_desktop.scale.client.collect`,
:func:`~heyim_desktop.scale.client.collect_into_history` and
:func:`heyim_desktop.scale.worker.run_worker`.
"""

from __future__ import annotations

from heyim_desktop.scale.errors import BatchFileError, QueueUnavailable

__all__ = ["BatchFileError", "QueueUnavailable"]
