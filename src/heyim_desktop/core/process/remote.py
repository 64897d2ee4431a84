"""The parent's side of the engine process: the child's lifecycle, and the Engine stand-in.

:class:`EngineProcess` is one child: its pipes, a reader thread for its messages and one
for its stderr (the last lines are kept for the log). :class:`RemoteEngine` looks like any
:class:`~heyim_desktop.core.engine.Engine` to :class:`~heyim_desktop.core.host.EngineHost`;
closing it ends the child, so switching models gives all memory back to the system.
:class:`ProcessLoader` starts a child per model and counts crashes in a row per model.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.codec import request_from_data, request_to_data
from heyim_desktop.core.conditioning import TokenCount
from heyim_desktop.core.engine import EngineInfo
from heyim_desktop.core.errors import EngineStopped, ModelError
from heyim_desktop.core.process.protocol import (
    PROTOCOL_VERSION,
    Message,
    MessageWriter,
    ProtocolError,
    describe_exit,
    error_from_data,
    read_message,
)
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress, ProgressCallback
from heyim_desktop.core.upscale_job import UpscaleRequest, UpscaleResult

log = logging.getLogger(__name__)
child_log = logging.getLogger("heyim_desktop.engine_child")

#: Seconds a child may take to stop after a cancel before it is killed (hung in native code).
CANCEL_GRACE_S = 10.0
#: Seconds a child may take to start and say hello (the interpreter and torch import).
START_TIMEOUT_S = 120.0
#: Seconds a child may take to exit after "quit" before it is killed.
QUIT_TIMEOUT_S = 10.0
#: Crashes in a row on one model after which it is no longer restarted automatically.
MAX_CRASHES_IN_A_ROW = 3
STDERR_TAIL_LINES = 60
#: The hidden argument that makes the frozen app's binary run as the engine child.
FROZEN_ARGUMENT = "engine-process"
#: Result blocks up to this size are kept for the next job; larger ones are freed after it.
KEEP_BLOCK_BYTES = 64 * 1024 * 1024
#: How long the window waits for a token count before it shows an estimate.
TOKEN_COUNT_TIMEOUT_S = 0.025

_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\|([\w.]+)\|(.*)$")
_POLL_S = 0.02
_T = TypeVar("_T")


def child_command(device: str, precision: str, compute_units: str | None) -> list[str]:
    if getattr(sys, "frozen", False):
        base = [sys.executable, FROZEN_ARGUMENT]
    else:
        base = [sys.executable, "-m", "heyim_desktop.core.process"]
    return [*base, "--device", device, "--precision", precision, "--compute-units", compute_units or ""]


def child_environment() -> dict[str, str]:
    """The parent's environment, with this very copy of heyim_desktop first on the path."""
    env = dict(os.environ)
    if not getattr(sys, "frozen", False):
        import heyim_desktop

        src = str(Path(heyim_desktop.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class EngineProcess:
    """One engine child and its pipes. Messages arrive on :meth:`next_message`."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None = None,
                 on_exit: Callable[[EngineProcess], None] | None = None) -> None:
        self.command = command
        self._env = env
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: MessageWriter | None = None
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._tokens: dict[int, tuple[threading.Event, list[TokenCount | None]]] = {}
        self._tokens_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        #: Set when we end the child on purpose (quit, or killed after a cancel's grace).
        self.expected_exit = False
        #: Set while an upscale job runs: a crash then is the upscale's, not the model's.
        self.upscaling = False
        self.returncode: int | None = None
        self._exited = threading.Event()
        self._readers: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._env if self._env is not None else child_environment(),
            start_new_session=sys.platform != "win32",  # Ctrl+C in a terminal reaches the parent only
        )
        assert self._proc.stdin is not None
        self._writer = MessageWriter(self._proc.stdin)  # type: ignore[arg-type]
        for target, name in ((self._read_messages, "heyim-engine-messages"), (self._read_stderr, "heyim-engine-stderr")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._readers.append(thread)
        hello = self.next_message(timeout)
        if hello is None:
            self.kill()
            raise EngineStopped(f"The engine process did not start within {timeout:g} s.")
        if hello.kind != "hello" or hello.data.get("version") != PROTOCOL_VERSION:
            self.kill()
            raise EngineStopped(f"The engine process speaks another protocol ({hello.data!r}); reinstall HeyIm.")
        log.info("engine process started (pid %d)", self.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else -1

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._exited.is_set() and self._proc.poll() is None

    def send(self, data: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> None:
        """Send a message; a dead child raises :class:`EngineStopped`."""
        if self._writer is None or not self.alive:
            raise self.stopped_error()
        try:
            self._writer.send(data, blobs)
        except (BrokenPipeError, ConnectionError, OSError, ValueError):
            self.wait_exit(5)
            raise self.stopped_error() from None

    def next_message(self, timeout: float | None) -> Message | None:
        """The child's next message; None on time-out; :class:`EngineStopped` once it died."""
        try:
            msg = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg is None:
            self._inbox.put(None)  # every later reader learns it too
            raise self.stopped_error()
        return msg

    def stop(self, timeout: float = QUIT_TIMEOUT_S) -> None:
        """Ask the child to quit (it closes its model), kill it if it does not."""
        if self._proc is None:
            return
        self.expected_exit = True
        if self.alive and self._writer is not None:
            try:
                self._writer.send({"op": "quit"})
            except (OSError, ValueError):
                pass
        if self._writer is not None:
            self._writer.close()
        if not self.wait_exit(timeout):
            log.warning("engine process %d did not quit within %g s: killed", self.pid, timeout)
            self.kill()
        self._join_readers()

    def kill(self) -> None:
        """End the child at once (SIGKILL); it is an expected exit."""
        if self._proc is None:
            return
        self.expected_exit = True
        if self._proc.poll() is None:
            self._proc.kill()
        self.wait_exit(10)

    def wait_exit(self, timeout: float | None) -> bool:
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return self._exited.wait(timeout)

    def _join_readers(self) -> None:
        for thread in self._readers:
            if thread is not threading.current_thread():
                thread.join(5)

    def exit_description(self) -> str:
        code = self.returncode if self.returncode is not None else (self._proc.poll() if self._proc else None)
        return describe_exit(code) if code is not None else "its pipe closed"

    def stopped_error(self) -> EngineStopped:
        return EngineStopped(f"The engine stopped unexpectedly ({self.exit_description()}). It restarts for the next job.")

    # -- token counts (any thread, usually the window's) -----------------------------------
    def count_tokens(self, text: str, timeout: float = TOKEN_COUNT_TIMEOUT_S) -> TokenCount | None:
        """The model tokenizer's count, or None when the child is busy, gone or has none."""
        if not self.alive:
            return None
        request_id = next(self._ids)
        done, answer = threading.Event(), [None]
        with self._tokens_lock:
            self._tokens[request_id] = (done, answer)  # type: ignore[assignment]
        try:
            self.send({"op": "count_tokens", "id": request_id, "text": text})
            if not done.wait(timeout):
                return None
            return answer[0]
        except EngineStopped:
            return None
        finally:
            with self._tokens_lock:
                self._tokens.pop(request_id, None)

    # -- reader threads --------------------------------------------------------------------
    def _read_messages(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            while True:
                msg = read_message(stream)  # type: ignore[arg-type]
                if msg is None:
                    break
                if msg.kind == "tokens":
                    self._answer_tokens(msg)
                else:
                    self._inbox.put(msg)
        except (ProtocolError, OSError, ValueError) as exc:
            if not self.expected_exit:
                log.error("engine process %d sent a broken message (%s): stopping it", self.pid, exc)
            self._proc.kill()
        self._finish()

    def _answer_tokens(self, msg: Message) -> None:
        request_id, count = msg.data.get("id"), msg.data.get("count")
        with self._tokens_lock:
            waiter = self._tokens.get(request_id) if isinstance(request_id, int) else None
        if waiter is not None:
            waiter[1][0] = _token_count(count)
            waiter[0].set()

    def _finish(self) -> None:
        assert self._proc is not None
        self.returncode = self._proc.wait()
        # Let stderr drain so the tail holds the child's last words.
        for thread in self._readers:
            if thread.name == "heyim-engine-stderr" and thread is not threading.current_thread():
                thread.join(2)
        if not self.expected_exit:
            tail = "\n".join(self.stderr_tail) or "(nothing)"
            log.error("engine process %d stopped unexpectedly (%s); the last lines it wrote:\n%s",
                      self.pid, describe_exit(self.returncode), tail)
        else:
            log.info("engine process %d ended (%s)", self.pid, describe_exit(self.returncode))
        if self._on_exit is not None:
            try:
                self._on_exit(self)
            except Exception:  # noqa: BLE001 - must not keep the sentinel from the inbox
                log.exception("engine exit handler failed")
        self._exited.set()
        self._inbox.put(None)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in iter(self._proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.stderr_tail.append(line)
            m = _LOG_LINE.match(line)
            if m:
                level = getattr(logging, m.group(1), logging.INFO)
                child_log.log(level, "[pid %d] %s: %s", self.pid, m.group(2), m.group(3))
            else:
                child_log.info("[pid %d] %s", self.pid, line)


class _ChildJobs:
    """Jobs in one engine child: the shared block results come back through, a job's messages
    followed to its end, cancel with its grace period, and upscales (which need no model)."""

    #: EngineHost sends upscale jobs to an engine with this (the GUI process never runs them).
    runs_upscales = True

    def __init__(self, process: EngineProcess, *, cancel_grace_s: float = CANCEL_GRACE_S) -> None:
        self.process = process
        self.cancel_grace_s = cancel_grace_s
        self._jobs = itertools.count(1)
        self._block: Any = None  # the shared block results come back through, reused between jobs
        #: Set when the child was killed because it ignored a cancel (hung).
        self.killed_hung = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stopped(self) -> bool:
        """True once the child is gone: the host starts a fresh one for the next job."""
        return not self.process.alive

    def upscale(self, request: UpscaleRequest, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> UpscaleResult:
        """Run an upscale job in the child: progress per tile, cancel between tiles. The image
        goes as raw RGB beside the settings; the result comes back like a generation's."""
        from heyim_desktop.core.upscale_job import upscale_to_data

        rgb = request.image.convert("RGB")
        width, height = request.output_size
        message = {"op": "upscale", "request": upscale_to_data(request), "image": [rgb.width, rgb.height]}

        def finish(msg: Message, block: Any) -> UpscaleResult:
            d = msg.data
            return UpscaleResult(request, _images(msg, block), str(d.get("model_name", request.upscaler)),
                                 {str(k): float(v) for k, v in dict(d.get("timings") or {}).items()},
                                 tiles=int(d.get("tiles") or 0))

        # A crash here is the upscale's, not the model's: it does not count against the model.
        self.process.upscaling = True
        try:
            return self._run(message, (rgb.tobytes(),), width * height * 3, finish,
                             lambda process: process.stopped_error(), progress, cancel)
        finally:
            self.process.upscaling = False

    def _run(self, message: dict[str, Any], blobs: tuple[bytes, ...], size: int,
             finish: Callable[[Message, Any], _T], crash_error: Callable[[EngineProcess], EngineStopped],
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> _T:
        from heyim_desktop.core.process import shared

        job_id = next(self._jobs)
        block = self._result_block(size)
        try:
            message = {**message, "job": job_id, "shm": block.name if block is not None else None,
                       "shm_size": block.size if block is not None else 0}
            self.process.send(message, blobs)
            return self._follow(job_id, progress, cancel, lambda msg: finish(msg, block))
        except EngineStopped:
            if self.process.expected_exit:
                raise
            raise crash_error(self.process) from None
        except Exception:
            raise
        except BaseException:
            # Not ours (KeyboardInterrupt, a queue's time limit): stop the child's job before leaving.
            self._abandon(job_id)
            raise
        finally:
            if block is not None and block.size > KEEP_BLOCK_BYTES:
                self._block = None
                shared.release(block)

    def _result_block(self, size: int) -> Any:
        """A shared block for ``size`` bytes of result pixels: the last one when it is big
        enough (a fresh block costs page faults on both sides), else a new one; None: the pixels
        come inline over the pipe."""
        from heyim_desktop.core.process import shared

        if self._block is not None and self._block.size >= size:
            return self._block
        if self._block is not None:
            shared.release(self._block)
            self._block = None
        if not shared.room_for(size):
            return None
        try:
            self._block = shared.create(size)
        except OSError as exc:
            log.warning("no shared memory for the result (%s); it comes over the pipe", exc)
        return self._block

    def _follow(self, job_id: int, progress: ProgressCallback | None, cancel: CancelToken | None,
                finish: Callable[[Message], _T]) -> _T:
        cancel_sent: float | None = None
        while True:
            if cancel is not None and cancel.cancelled and cancel_sent is None:
                self.process.send({"op": "cancel", "job": job_id})
                cancel_sent = time.monotonic()
            if cancel_sent is not None and time.monotonic() - cancel_sent > self.cancel_grace_s:
                self._kill_hung(job_id)
                raise Cancelled()
            msg = self.process.next_message(_POLL_S)
            if msg is None or msg.data.get("job") != job_id:
                continue
            kind = msg.kind
            if kind == "progress":
                if progress is not None:
                    progress(_progress(msg))
            elif kind == "result":
                return finish(msg)
            elif kind == "cancelled":
                raise Cancelled()
            elif kind == "failed":
                raise error_from_data(msg.data.get("error"))

    def _kill_hung(self, job_id: int) -> None:
        log.warning("engine process %d did not stop within %g s of a cancel (job %d): killed",
                    self.pid, self.cancel_grace_s, job_id)
        self.killed_hung = True
        self.process.kill()

    def _abandon(self, job_id: int) -> None:
        try:
            self.process.send({"op": "cancel", "job": job_id})
            deadline = time.monotonic() + self.cancel_grace_s
            while time.monotonic() < deadline:
                msg = self.process.next_message(_POLL_S)
                if msg is not None and msg.data.get("job") == job_id and msg.kind in ("result", "cancelled", "failed"):
                    return
            self._kill_hung(job_id)
        except EngineStopped:
            pass

    def close(self) -> None:
        """End the child: the operating system gets all of its memory back."""
        self.process.stop()
        if self._block is not None:
            from heyim_desktop.core.process import shared

            shared.release(self._block)
            self._block = None


class RemoteEngine(_ChildJobs):
    """An :class:`~heyim_desktop.core.engine.Engine` whose model lives in an engine child."""

    def __init__(self, process: EngineProcess, ref: str, info: dict[str, Any], *,
                 cancel_grace_s: float = CANCEL_GRACE_S, on_success: Callable[[str], None] | None = None,
                 crash_error: Callable[[EngineProcess], EngineStopped] | None = None) -> None:
        super().__init__(process, cancel_grace_s=cancel_grace_s)
        self.ref = ref
        self._info = EngineInfo.from_dict(info)
        self.name = self._info.name
        self.model_name = self._info.model_name
        self._on_success = on_success
        self._crash_error = crash_error or (lambda process: process.stopped_error())

    @property
    def info(self) -> EngineInfo:
        """What the child said about its model (plain data carried over the channel)."""
        return self._info

    @property
    def capabilities(self) -> Capabilities:
        return self._info.capabilities

    @property
    def default_size(self) -> tuple[int, int]:
        return self._info.fixed_size or self._info.default_size

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self._info.fixed_size

    @property
    def supports_img2img(self) -> bool:
        return self._info.capabilities.img2img

    def count_tokens(self, text: str, timeout: float = TOKEN_COUNT_TIMEOUT_S) -> TokenCount:
        """The child's count; TimeoutError when it does not answer within ``timeout`` (busy):
        the window then shows an estimate and counts again shortly."""
        count = self.process.count_tokens(text, timeout)
        if count is None:
            raise TimeoutError("the engine process did not answer the token count in time")
        return count

    #: The child loads an SDXL refiner beside the base model itself (EngineHost leaves it to it).
    loads_refiner_itself = True

    def generate(self, request: GenerationRequest, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> GenerationResult:
        data, blobs = _request_message(request)
        message: dict[str, Any] = {"op": "generate", "request": data}
        if blobs:
            message["init_image"] = 0

        def finish(msg: Message, block: Any) -> GenerationResult:
            result = _result(msg, request, block)
            if self._on_success is not None:
                self._on_success(self.ref)
            return result

        return self._run(message, blobs, request.width * request.height * 3 * request.count, finish,
                         self._crash_error, progress, cancel)


class RemoteUpscaler(_ChildJobs):
    """An engine child with no model, for upscale jobs while no model is loaded."""

    name = model_name = "upscale"


class ProcessLoader:
    """An :data:`~heyim_desktop.core.host.EngineLoader` that loads each model in a fresh child."""

    def __init__(self, device: str = "auto", precision: str = "auto", compute_units: str | None = None, *,
                 on_status: Callable[[str], None] | None = None, cancel_grace_s: float = CANCEL_GRACE_S,
                 env: dict[str, str] | None = None, memory: str = "auto") -> None:
        self.device, self.precision, self.compute_units = device, precision, compute_units
        #: how Z-Image / FLUX.2 [klein] / SD 3.5 models use memory (core.devices.MEMORY_MODES)
        self.memory = memory
        self.on_status = on_status
        self.cancel_grace_s = cancel_grace_s
        self.env = env
        self._lock = threading.Lock()
        self._crashes: dict[str, int] = {}
        self._loading: EngineProcess | None = None

    def __call__(self, ref: str) -> RemoteEngine:
        return self.load(ref)

    def crashes(self, ref: str) -> int:
        with self._lock:
            return self._crashes.get(ref, 0)

    def forgive(self, ref: str | None = None) -> None:
        """Allow automatic restarts again (the user chose the model anew)."""
        with self._lock:
            if ref is None:
                self._crashes.clear()
            else:
                self._crashes.pop(ref, None)

    def load(self, ref: str, *, device: str | None = None, precision: str | None = None,
             compute_units: str | None = None, on_status: Callable[[str], None] | None = None,
             text_encoder: str | None = None, memory: str | None = None) -> RemoteEngine:
        """``ref`` loaded in a new engine process; ``text_encoder``: a GGUF text encoder file used instead
        of a family model's own (core.families.text_encoder_gguf); ``memory``: over the loader's own."""
        if self.crashes(ref) >= MAX_CRASHES_IN_A_ROW:
            raise ModelError(self._gave_up(ref))
        from heyim_desktop.core.loading import DEMO_REF, require_model_path
        from heyim_desktop.core.process.child import split_test_hook

        real_ref = split_test_hook(ref)[0]
        if real_ref != DEMO_REF:
            require_model_path(real_ref)  # a missing folder needs no process to say so
        command = child_command(device or self.device, precision or self.precision, compute_units or self.compute_units)
        process = EngineProcess(command, env=self.env, on_exit=lambda p: self._exited(ref, p))
        with self._lock:
            self._loading = process
        try:
            process.start()
            process.send({"op": "load", "ref": ref, "memory": memory or self.memory,
                          **({"text_encoder": text_encoder} if text_encoder else {})})
            status = on_status or self.on_status
            while True:
                msg = process.next_message(None)
                assert msg is not None
                if msg.kind == "status" and status is not None:
                    status(str(msg.data.get("text", "")))
                elif msg.kind == "ready":
                    info = msg.data.get("info")
                    return RemoteEngine(process, ref, info if isinstance(info, dict) else {},
                                        cancel_grace_s=self.cancel_grace_s, on_success=self._succeeded,
                                        crash_error=lambda p: crash_error(p, self.crashes(ref), ref))
                elif msg.kind == "failed":
                    raise error_from_data(msg.data.get("error"))
        except EngineStopped as exc:
            raise self._crash_error(ref, process, exc) from None
        except BaseException:
            process.stop()
            raise
        finally:
            with self._lock:
                self._loading = None

    def abort_loading(self) -> None:
        """Kill the child that is loading a model now, if any (the app is quitting)."""
        with self._lock:
            process = self._loading
        if process is not None:
            process.kill()

    def upscaler(self, *, device: str | None = None) -> RemoteUpscaler:
        """A fresh engine child with no model, for upscale jobs while no model is loaded."""
        process = EngineProcess(child_command(device or self.device, self.precision, self.compute_units), env=self.env)
        try:
            process.start()
        except BaseException:
            process.kill()
            raise
        return RemoteUpscaler(process, cancel_grace_s=self.cancel_grace_s)

    def _exited(self, ref: str, process: EngineProcess) -> None:
        if not process.expected_exit and not process.upscaling:
            with self._lock:
                self._crashes[ref] = self._crashes.get(ref, 0) + 1
                count = self._crashes[ref]
            if count >= MAX_CRASHES_IN_A_ROW:
                log.error("%s", self._gave_up(ref))

    def _succeeded(self, ref: str) -> None:
        with self._lock:
            self._crashes.pop(ref, None)

    def _crash_error(self, ref: str, process: EngineProcess, exc: EngineStopped) -> EngineStopped:
        if process.alive or process.expected_exit:
            return exc
        return crash_error(process, self.crashes(ref), ref)

    def _gave_up(self, ref: str) -> str:
        return (f"The engine stopped unexpectedly {MAX_CRASHES_IN_A_ROW} times in a row with the model "
                f"{_label(ref)}, so HeyIm no longer restarts it automatically. Choose the model again to "
                f"retry, or pick another one.")


def crash_error(process: EngineProcess, crashes: int, ref: str) -> EngineStopped:
    """The message for a job that died with its child."""
    how = process.exit_description()
    if crashes >= MAX_CRASHES_IN_A_ROW:
        return EngineStopped(
            f"The engine stopped unexpectedly ({how}). That is {crashes} times in a row with the model "
            f"{_label(ref)}, so it is not restarted automatically; choose the model again to retry.")
    return EngineStopped(f"The engine stopped unexpectedly ({how}). It restarts for the next job.")


def _label(ref: str) -> str:
    return Path(ref).name or ref


def _token_count(data: Any) -> TokenCount | None:
    """A TokenCount from the child's plain data: known fields only, lists back to tuples."""
    import dataclasses

    if not isinstance(data, dict):
        return None
    names = {f.name for f in dataclasses.fields(TokenCount)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    try:
        return TokenCount(**values)
    except (TypeError, ValueError):
        return None


def _request_message(request: GenerationRequest) -> tuple[dict[str, Any], tuple[bytes, ...]]:
    """The request as the codec's plain data (file paths included: the child is ours); an input
    image goes as the codec's PNG bytes beside it, not as base64 inside."""
    return _split_image(request_to_data(request, include_paths=True))


def _split_image(data: dict[str, Any]) -> tuple[dict[str, Any], tuple[bytes, ...]]:
    import base64

    encoded = data.pop("init_image", None)
    if not isinstance(encoded, str):
        return data, ()
    return data, (base64.b64decode(encoded),)


def _png_image(data: bytes) -> Any:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _progress(msg: Message) -> Progress:
    d = msg.data
    preview = None
    shape = d.get("preview")
    if isinstance(shape, list) and len(shape) == 2 and msg.blobs:
        import numpy as np

        h, w = int(shape[0]), int(shape[1])
        if h * w * 3 == len(msg.blobs[0]):
            preview = np.frombuffer(msg.blobs[0], dtype=np.uint8).reshape(h, w, 3)
    return Progress(step=int(d["step"]), total=int(d["total"]), elapsed=float(d["elapsed"]),
                    image_index=int(d.get("image_index", 0)), image_count=int(d.get("image_count", 1)),
                    preview=preview)


def _images(msg: Message, block: Any) -> tuple[GeneratedImage, ...]:
    """A result's images, from the shared block or the message's blobs."""
    import numpy as np
    from PIL import Image

    images = []
    for entry in msg.data.get("images", []):
        w, h = int(entry["width"]), int(entry["height"])
        n = w * h * 3
        if "offset" in entry and block is not None:
            offset = int(entry["offset"])
            if offset < 0 or offset + n > block.size:
                raise ProtocolError("result image outside the shared block")
            pixels = bytes(block.buf[offset:offset + n])
        else:
            pixels = msg.blobs[int(entry["blob"])]
            if len(pixels) != n:
                raise ProtocolError("result image of the wrong size")
        arr = np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, 3)
        images.append(GeneratedImage(image=Image.fromarray(arr, mode="RGB"), seed=int(entry["seed"]),
                                     index=int(entry["index"])))
    return tuple(images)


def _result(msg: Message, request: GenerationRequest, block: Any) -> GenerationResult:
    d = msg.data
    images = _images(msg, block)
    recorded = d.get("request")
    if isinstance(recorded, dict):
        # The engine recorded another request than it got (outpainting: the grown canvas).
        init = _png_image(msg.blobs[int(d["request_image"])]) if isinstance(d.get("request_image"), int) else None
        final = request_from_data(recorded, trust_paths=True, init_image=init)
    else:
        final = request.replace(seed=int(d["seed"]))
    return GenerationResult(
        request=final,
        images=images,
        model_name=str(d.get("model_name", "")),
        engine=str(d.get("engine", "")),
        timings={str(k): float(v) for k, v in dict(d.get("timings") or {}).items()},
        warnings=tuple(str(w) for w in d.get("warnings") or ()),
        truncated_prompt=d.get("truncated_prompt"),
        truncated_negative=d.get("truncated_negative"),
        model_hash=d["model_hash"] if isinstance(d.get("model_hash"), str) else None,
        parameters_extra=_parameters_extra(d.get("parameters_extra")),
    )


def _parameters_extra(raw: Any) -> tuple[tuple[str, str], ...]:
    """The engine's extra metadata pairs: strings only, bounded (anything else is dropped)."""
    if not isinstance(raw, list):
        return ()
    pairs = [(k, v) for k, v in (p for p in raw[:32] if isinstance(p, list) and len(p) == 2)
             if isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 64 and len(v) <= 1024]
    return tuple(pairs)
