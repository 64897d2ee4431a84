"""``heyim-desktop worker`` and ``heyim-desktop batch submit|status|collect``.

The queue URL comes from ``--queue`` or the ``HEYIM_QUEUE`` environment variable (better
for a password: command lines are visible to other users of the machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Callable

from heyim_desktop.core.devices import MEMORY_HELP, MEMORY_MODES, PRECISION_HELP, PRECISIONS

QUEUE_ENV = "HEYIM_QUEUE"
EXIT_OK, EXIT_USAGE, EXIT_RUNTIME = 0, 2, 4


def _queue_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", "-q", default=os.environ.get(QUEUE_ENV),
                        help=f"redis://[:PASSWORD@]HOST:6379/0 or rediss:// (TLS); default ${QUEUE_ENV}")


def add_parsers(sub: Any) -> None:
    """Add the ``worker`` and ``batch`` subcommands to the main parser's subparsers."""
    from heyim_desktop.scale.broker import DEFAULT_DEAD_AFTER_S, DEFAULT_JOB_TIMEOUT_S

    worker = sub.add_parser("worker", help="render jobs from a Redis queue (several machines may share one)")
    _queue_arg(worker)
    src = worker.add_mutually_exclusive_group()
    src.add_argument("--model", "-m", help="the model this worker serves (a diffusers folder or .safetensors checkpoint), loaded once")
    src.add_argument("--demo", action="store_true", help="serve the built-in tiny random model")
    worker.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    worker.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    worker.add_argument("--memory", default="auto", choices=MEMORY_MODES, help=MEMORY_HELP)
    worker.add_argument("--dead-after", type=float, default=DEFAULT_DEAD_AFTER_S, metavar="SECONDS",
                        help=f"retry a job whose worker has been silent this long (default {DEFAULT_DEAD_AFTER_S:g})")
    worker.add_argument("--job-timeout", type=float, default=DEFAULT_JOB_TIMEOUT_S, metavar="SECONDS",
                        help=f"interrupt and retry a job running longer (default {DEFAULT_JOB_TIMEOUT_S:g})")
    worker.add_argument("--id", default="", help="a name for this worker in `batch status` (default host-pid)")

    batch = sub.add_parser("batch", help="submit a batch file to a Redis queue, watch it, collect the images")
    bsub = batch.add_subparsers(dest="batch_command", parser_class=type(batch))
    submit = bsub.add_parser("submit", help="queue every line of a CSV or JSONL batch file")
    _queue_arg(submit)
    submit.add_argument("file", help="CSV (header row) or .jsonl: prompt, negative, seed or 1-20, steps, guidance, size, scheduler, model")
    status = bsub.add_parser("status", help="progress of a batch (or the recent batches) and the live workers")
    _queue_arg(status)
    status.add_argument("batch_id", nargs="?", help="a batch id (default: list recent batches)")
    collect = bsub.add_parser("collect", help="write a batch's finished images as PNGs with their parameters")
    _queue_arg(collect)
    collect.add_argument("batch_id")
    collect.add_argument("--out", "-o", required=True, help="destination folder")
    collect.add_argument("--wait", action="store_true", help="wait until every job has finished first")
    collect.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="with --wait: give up after this long")


def _need_queue(args: argparse.Namespace) -> str:
    from heyim_desktop.core.errors import InvalidRequest

    if not args.queue:
        raise InvalidRequest("queue", f"pass --queue redis://HOST:6379/0 (or set {QUEUE_ENV})")
    return str(args.queue)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from heyim_desktop.scale.errors import QueueUnavailable

        try:
            return fn(args)
        except QueueUnavailable as exc:
            print(f"heyim-desktop: error: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        except ModuleNotFoundError as exc:
            if exc.name not in ("dramatiq", "redis"):
                raise
            print("heyim-desktop: error: the Redis queue needs the 'scale' extra: "
                  "pip install 'heyim-desktop[scale]'", file=sys.stderr)
            return EXIT_RUNTIME
    return run


@_guard
def cmd_worker(args: argparse.Namespace) -> int:
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.scale.worker import WorkerConfig, run_worker

    url = _need_queue(args)
    if not args.model and not args.demo:
        raise InvalidRequest("model", "pass --model FOLDER, or --demo for the built-in tiny random model")
    for name in ("dead_after", "job_timeout"):
        if getattr(args, name) <= 0:
            raise InvalidRequest(name.replace("_", "-"), "must be more than 0 seconds")
    logging.getLogger("heyim_desktop.scale").setLevel(logging.INFO)
    config = WorkerConfig(url=url, model="demo" if args.demo else args.model, device=args.device,
                          precision=args.precision, memory=args.memory, dead_after_s=args.dead_after,
                          job_timeout_s=args.job_timeout,
                          worker_id=args.id)
    run_worker(config)
    return EXIT_OK


def _fmt_counts(status: Any) -> str:
    parts = [f"{status.count(s)} {s}" for s in ("done", "failed", "running", "queued") if status.count(s)]
    return f"{len(status.jobs)} job(s): " + ", ".join(parts or ["none"])


@_guard
def cmd_batch(args: argparse.Namespace) -> int:
    from heyim_desktop.scale import client

    command = getattr(args, "batch_command", None)
    if command is None:
        print("heyim-desktop: error: batch needs a command: submit, status or collect", file=sys.stderr)
        return EXIT_USAGE
    url = _need_queue(args)
    if command == "submit":
        submitted = client.submit_file(url, args.file)
        print(submitted.batch_id)
        print(f"Queued {len(submitted.job_ids)} job(s) as batch {submitted.batch_id}.", file=sys.stderr)
        return EXIT_OK
    if command == "status":
        return _status(url, args.batch_id)
    status = None
    if args.wait:
        status = client.wait_for_batch(url, args.batch_id, timeout_s=args.timeout,
                                       on_status=lambda s: print(f"\r{_fmt_counts(s)}   ", end="", file=sys.stderr, flush=True))
        print(file=sys.stderr)
    done = client.collect(url, args.batch_id, args.out)
    for path in done.saved:
        print(path)
    for job_id, reason in done.failed:
        print(f"heyim-desktop: warning: job {job_id} failed: {reason}", file=sys.stderr)
    note = f"; {done.pending} job(s) not finished yet (collect again later)" if done.pending else ""
    print(f"Collected {len(done.saved)} new image(s) ({done.already} already there), {len(done.failed)} failed{note}.",
          file=sys.stderr)
    return EXIT_OK if not done.failed and (status is None or status.finished) else EXIT_RUNTIME


def _status(url: str, batch_id: str | None) -> int:
    from heyim_desktop.scale import client
    from heyim_desktop.scale.connection import open_redis
    from heyim_desktop.scale.records import Records

    records = Records(open_redis(url))
    if batch_id:
        status = client.batch_status(url, batch_id, records)
        print(f"batch {status.id} ({status.name or status.source}): {_fmt_counts(status)}")
        for job in status.jobs:
            if job.state == "running":
                print(f"  {job.id} running on {job.worker} (step {job.step}/{job.total}, attempt {job.attempts})")
            elif job.state == "failed":
                print(f"  {job.id} failed (line {job.line}): {job.error}")
            elif job.error and job.state == "queued":
                print(f"  {job.id} queued again: {job.error}")
    else:
        ids = records.batch_ids()
        if not ids:
            print("No batches on this queue.")
        for bid in ids:
            listed = records.batch(bid)
            if listed is not None:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(listed.created))
                print(f"{listed.id}  {when}  {listed.name or listed.source}: {_fmt_counts(listed)}")
    workers = records.workers()
    print(f"{len(workers)} worker(s) alive" + (":" if workers else "."))
    for w in workers:
        doing = f"rendering {w.job}" if w.job else w.state
        print(f"  {w.id} ({w.model} on {w.device or 'no model'}): {doing}, {w.jobs_done} job(s) done")
    return EXIT_OK


COMMANDS = {"worker": cmd_worker, "batch": cmd_batch}
