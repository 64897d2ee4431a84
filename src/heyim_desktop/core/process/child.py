"""The engine child: owns one loaded model and runs the parent's jobs, one at a time.

The main thread reads messages (so cancel and token counts are answered while a job
runs); one job thread loads the model and generates, or upscales (an upscale needs no model,
and a loaded one stays loaded). stdout carries only messages: the
original descriptor is kept for them and fd 1 is pointed at stderr, so a library that
prints cannot corrupt the stream. The child exits when the parent says ``quit`` or
closes its end of the pipe (the parent died).
"""

from __future__ import annotations

import argparse
import io
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO, Sequence

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.process.protocol import (
    PROTOCOL_VERSION,
    Message,
    MessageWriter,
    error_to_data,
    read_message,
)

log = logging.getLogger("heyim_desktop.engine_child")

#: Test models: "hang:<ref>" loads ``ref`` and then hangs in every UNet call (see tests).
_TEST_HOOK_ENV = "HEYIM_ENGINE_TEST_HOOKS"


def engine_info(engine: Any, ref: str) -> dict[str, Any]:
    """What the parent learns about a loaded model: :class:`EngineInfo` as plain data."""
    from heyim_desktop.core.engine import EngineInfo

    info = engine.info
    out: dict[str, Any] = info.to_dict() if isinstance(info, EngineInfo) else {
        "name": engine.name, "model_name": engine.model_name, "default_size": list(engine.default_size)}
    out["ref"] = ref
    clean: dict[str, Any] = _jsonable(out)
    return clean


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and isinstance(value.value, (str, int)):  # enums
        return value.value
    return str(value)


class EngineChild:
    def __init__(self, writer: MessageWriter, *, device: str, precision: str, compute_units: str | None,
                 log_lines: logging.Handler | None = None) -> None:
        self.writer = writer
        self._log_lines = log_lines
        self.device, self.precision, self.compute_units = device, precision, compute_units
        self.engine: Any = None
        self.ref: str | None = None
        self._work: queue.Queue[Message | None] = queue.Queue()
        self._job_lock = threading.Lock()
        self._job: tuple[int, CancelToken] | None = None
        self._shm: Any = None
        #: Held by the job thread from a job's start to its first step (prompt encoding).
        self._tokenizer_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run_work, name="heyim-engine-job", daemon=True)

    # -- the reader (main thread) ----------------------------------------------------------
    def serve(self, stream: BinaryIO) -> None:
        self._thread.start()
        self.writer.send({"ev": "hello", "pid": os.getpid(), "version": PROTOCOL_VERSION})
        if self._log_lines is not None:
            self._log_lines.flush()
        try:
            while True:
                msg = read_message(stream)
                if msg is None or msg.kind == "quit":
                    break
                if msg.kind == "cancel":
                    self._cancel(msg.data.get("job"))
                elif msg.kind == "count_tokens":
                    self._count_tokens(msg)
                elif msg.kind in ("load", "generate", "upscale"):
                    self._work.put(msg)
                else:
                    log.warning("unknown message %r ignored", msg.kind)
        finally:
            # The running job (if any) stops within a step; the model is not closed: the
            # process ends next and the system takes all of its memory back at once.
            self._cancel(None)
            self._work.put(None)
            self._thread.join(30)

    def _cancel(self, job_id: Any) -> None:
        with self._job_lock:
            if self._job is not None and (job_id is None or self._job[0] == job_id):
                self._job[1].cancel()
        if self._log_lines is not None:
            self._log_lines.flush()  # a job that hangs past the cancel leaves its lines in the parent's tail

    def _count_tokens(self, msg: Message) -> None:
        import dataclasses

        text = msg.data.get("text")
        count: dict[str, Any] | None = None
        engine = self.engine
        # The job thread encodes the prompt with the same tokenizer at a job's start: a fast
        # tokenizer must not be used by two threads at once, so a count waits for that.
        if isinstance(text, str) and engine is not None and self._tokenizer_lock.acquire(timeout=1.0):
            try:
                count = _jsonable(dataclasses.asdict(engine.count_tokens(text)))
            except Exception:  # noqa: BLE001 - the window falls back to an estimate
                log.debug("token count failed", exc_info=True)
            finally:
                self._tokenizer_lock.release()
        self.writer.send({"ev": "tokens", "id": msg.data.get("id"), "count": count})

    # -- the job thread --------------------------------------------------------------------
    def _run_work(self) -> None:
        while True:
            msg = self._work.get()
            if msg is None:
                return
            if msg.kind == "load":
                encoder = msg.data.get("text_encoder")
                memory = msg.data.get("memory")
                self._load(str(msg.data.get("ref")), encoder if isinstance(encoder, str) and encoder else None,
                           memory if isinstance(memory, str) and memory else "auto")
            elif msg.kind == "upscale":
                self._upscale(msg)
            else:
                self._generate(msg)
            if self._log_lines is not None:
                self._log_lines.flush()  # the job's last message is out: now its log lines

    def _load(self, ref: str, text_encoder: str | None = None, memory: str = "auto") -> None:
        from heyim_desktop.core.loading import load_engine

        self._close_engine()
        t0 = time.perf_counter()
        try:
            real_ref, hang = split_test_hook(ref)
            engine = load_engine(real_ref, device=self.device, precision=self.precision,
                                 compute_units=self.compute_units, text_encoder=text_encoder, memory=memory,
                                 on_status=lambda text: self.writer.send({"ev": "status", "text": str(text)}))
            if hang:
                _make_unet_hang(engine)
            info = engine_info(engine, ref)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            from heyim_desktop.core.errors import UserFacingError

            if not isinstance(exc, UserFacingError):
                log.exception("loading %s failed", ref)
            self.writer.send({"ev": "failed", "to": "load", "error": error_to_data(exc)})
            return
        self.engine, self.ref = engine, ref
        self.writer.send({"ev": "ready", "info": info, "seconds": time.perf_counter() - t0})

    def _refiner_for(self, ref: str) -> Any:
        """The SDXL refiner a job names, loaded in this process beside the base model (kept for the next job)."""
        from heyim_desktop.core.loading import load_engine

        held = getattr(self, "_refiner", None)
        if held is not None and held[0] == ref:
            return held[1]
        if held is not None:
            held[1].close()
            self._refiner = None
        engine = load_engine(ref, device=self.device, precision=self.precision, compute_units=self.compute_units)
        self._refiner = (ref, engine)
        return engine

    def _generate(self, msg: Message) -> None:
        from heyim_desktop.core.result import Progress

        job_id = int(msg.data.get("job", 0))
        cancel = CancelToken()
        with self._job_lock:
            self._job = (job_id, cancel)
        encoding = self._tokenizer_lock.acquire()

        def encoded() -> None:
            nonlocal encoding
            if encoding:
                encoding = False
                self._tokenizer_lock.release()

        try:
            if self.engine is None:
                from heyim_desktop.core.errors import ModelError

                raise ModelError("No model is loaded in the engine.")
            request = _request_from_message(msg)

            def on_progress(p: Progress) -> None:
                encoded()  # the prompt is encoded by the first step
                data: dict[str, Any] = {"ev": "progress", "job": job_id, "step": p.step, "total": p.total,
                                        "elapsed": p.elapsed, "image_index": p.image_index,
                                        "image_count": p.image_count, "preview": None}
                blobs: tuple[bytes, ...] = ()
                if p.preview is not None:
                    import numpy as np

                    arr = np.ascontiguousarray(p.preview, dtype=np.uint8)
                    data["preview"] = [int(arr.shape[0]), int(arr.shape[1])]
                    blobs = (arr.tobytes(),)
                self.writer.send(data, blobs)

            if request.refiner:
                refiner = self._refiner_for(request.refiner)
                result = self.engine.generate(request, progress=on_progress, cancel=cancel,
                                              refiner=refiner)
            else:
                result = self.engine.generate(request, progress=on_progress, cancel=cancel)
            self._send_result(job_id, request, result, msg.data.get("shm"), int(msg.data.get("shm_size") or 0))
        except Cancelled:
            self.writer.send({"ev": "cancelled", "job": job_id})
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            from heyim_desktop.core.errors import UserFacingError

            if not isinstance(exc, UserFacingError):
                log.exception("job %s failed with an unexpected error", job_id)
            self.writer.send({"ev": "failed", "to": "generate", "job": job_id, "error": error_to_data(exc)})
        finally:
            encoded()
            with self._job_lock:
                self._job = None

    def _upscale(self, msg: Message) -> None:
        """An upscale job: no generation model needed (a loaded one stays loaded and untouched)."""
        from heyim_desktop.core.result import Progress
        from heyim_desktop.core.torch_engine import DEVICES
        from heyim_desktop.core.upscale_job import run_upscale_job, upscale_from_data

        job_id = int(msg.data.get("job", 0))
        cancel = CancelToken()
        with self._job_lock:
            self._job = (job_id, cancel)
        try:
            data = msg.data.get("request")
            shape = msg.data.get("image")
            if not isinstance(data, dict) or not (isinstance(shape, list) and len(shape) == 2) or not msg.blobs:
                from heyim_desktop.core.errors import InvalidRequest

                raise InvalidRequest("request", "an upscale needs its settings and its image")
            from PIL import Image

            # The parent's image as raw RGB (it passed the pixel budget there); exactly what
            # upscale_image would make of it with convert("RGB").
            image = Image.frombytes("RGB", (int(shape[0]), int(shape[1])), msg.blobs[0])
            request = upscale_from_data(data, image)

            def on_progress(p: Progress) -> None:
                self.writer.send({"ev": "progress", "job": job_id, "step": p.step, "total": p.total,
                                  "elapsed": p.elapsed, "image_index": p.image_index,
                                  "image_count": p.image_count, "preview": None})

            result = run_upscale_job(request, progress=on_progress, cancel=cancel,
                                     device=self.device if self.device in DEVICES else "auto")
            images, blobs = self._pack_images(result.images, msg.data.get("shm"), int(msg.data.get("shm_size") or 0))
            self.writer.send({"ev": "result", "job": job_id, "images": images, "model_name": result.model_name,
                              "tiles": result.tiles,
                              "timings": {str(k): float(v) for k, v in result.timings.items()}}, blobs)
        except Cancelled:
            self.writer.send({"ev": "cancelled", "job": job_id})
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            from heyim_desktop.core.errors import UserFacingError

            if not isinstance(exc, UserFacingError):
                log.exception("upscale job %s failed with an unexpected error", job_id)
            self.writer.send({"ev": "failed", "to": "upscale", "job": job_id, "error": error_to_data(exc)})
        finally:
            with self._job_lock:
                self._job = None

    def _pack_images(self, generated: Any, shm_name: Any, shm_size: int) -> tuple[list[dict[str, Any]], tuple[bytes, ...]]:
        """Result pixels into the parent's shared block when it is big enough, else as blobs."""
        import numpy as np

        arrays = [np.ascontiguousarray(np.asarray(g.image.convert("RGB")), dtype=np.uint8) for g in generated]
        total = sum(a.nbytes for a in arrays)
        images: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        shm = self._attach(shm_name) if isinstance(shm_name, str) and total <= shm_size else None
        offset = 0
        for g, arr in zip(generated, arrays):
            entry: dict[str, Any] = {"seed": g.seed, "index": g.index, "height": int(arr.shape[0]),
                                     "width": int(arr.shape[1])}
            if shm is not None and shm.buf is not None:
                shm.buf[offset:offset + arr.nbytes] = arr.reshape(-1).data
                entry["offset"] = offset
                offset += arr.nbytes
            else:
                entry["blob"] = len(blobs)
                blobs.append(arr.tobytes())
            images.append(entry)
        return images, tuple(blobs)

    def _send_result(self, job_id: int, request: Any, result: Any, shm_name: Any, shm_size: int) -> None:
        images, packed = self._pack_images(result.images, shm_name, shm_size)
        blobs = list(packed)
        message: dict[str, Any] = {"ev": "result", "job": job_id, "images": images, "seed": result.request.seed}
        recorded = result.request
        if not (recorded == request.replace(seed=recorded.seed) and recorded.init_image is request.init_image
                and recorded.inpaint is request.inpaint):
            # The engine recorded another request (outpainting's grown canvas): send all of it.
            from heyim_desktop.core.codec import request_to_data

            data = request_to_data(recorded, include_paths=True)
            encoded = data.pop("init_image", None)
            if isinstance(encoded, str):
                import base64

                message["request_image"] = len(blobs)
                blobs.append(base64.b64decode(encoded))
            message["request"] = data
        message.update({
            "model_name": result.model_name, "engine": result.engine,
            "model_hash": getattr(result, "model_hash", None),
            "parameters_extra": [[str(k), str(v)] for k, v in getattr(result, "parameters_extra", ())],
            "timings": {str(k): float(v) for k, v in result.timings.items()},
            "warnings": list(result.warnings), "truncated_prompt": result.truncated_prompt,
            "truncated_negative": result.truncated_negative,
        })
        self.writer.send(message, tuple(blobs))

    def _attach(self, name: str) -> Any:
        """The parent's result block, kept open while the parent reuses it."""
        from heyim_desktop.core.process.shared import attach

        if self._shm is not None and self._shm.name == name.lstrip("/"):
            return self._shm
        if self._shm is not None:
            self._shm.close()
        self._shm = attach(name)
        return self._shm

    def _close_engine(self) -> None:
        if self.engine is not None:
            try:
                self.engine.close()
            except Exception:  # noqa: BLE001 - the process ends anyway
                log.exception("closing the engine failed")
        self.engine, self.ref = None, None
        held = getattr(self, "_refiner", None)
        if held is not None:
            self._refiner = None
            held[1].close()


def _request_from_message(msg: Message) -> Any:
    from heyim_desktop.core.codec import request_from_data

    data = msg.data.get("request")
    if not isinstance(data, dict):
        from heyim_desktop.core.errors import InvalidRequest

        raise InvalidRequest("request", "must be a JSON object")
    image = None
    index = msg.data.get("init_image")
    if isinstance(index, int) and 0 <= index < len(msg.blobs):
        from PIL import Image

        # The parent's own image, losslessly as PNG (it passed the pixel budget there).
        image = Image.open(io.BytesIO(msg.blobs[index]))
        image.load()
    return request_from_data(data, trust_paths=True, init_image=image)


class HeldLogLines(logging.handlers.MemoryHandler):
    """The child's log lines, held while a job runs and written after its last message.

    Each line written to stderr wakes the parent's stderr reader; on a busy machine that wake-up
    preempts the job mid-way (measured: about 2 to 5 ms per job under load, against 0.1 ms on an
    idle core). So the job thread flushes after each job; warnings and errors, and anything
    printed straight to stderr, still go at once, and a full buffer flushes itself. A child
    killed mid-job loses only that job's info lines from the parent's stderr tail.
    """

    def __init__(self, target: logging.Handler, capacity: int = 200) -> None:
        super().__init__(capacity, flushLevel=logging.WARNING, target=target, flushOnClose=True)


def split_test_hook(ref: str) -> tuple[str, bool]:
    """Only with HEYIM_ENGINE_TEST_HOOKS=1: ``hang:<ref>`` makes every UNet call block forever."""
    if os.environ.get(_TEST_HOOK_ENV) == "1" and ref.startswith("hang:"):
        return ref[len("hang:"):], True
    return ref, False


def _make_unet_hang(engine: Any) -> None:
    components = engine.components

    def blocked(*_args: Any, **_kwargs: Any) -> Any:
        log.warning("test hook: the UNet blocks and ignores cancel")  # a warning: written at once
        threading.Event().wait()  # blocks like a hung driver call: no cancel check ever runs

    components.unet = blocked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heyim-engine", description="HeyIm's engine process (started by the app).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compute-units", default="")
    args = parser.parse_args(list(argv or ()))

    # Messages go out on the original stdout; anything printed goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(name)s|%(message)s"))
    held = HeldLogLines(handler)
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(logging.INFO)
    try:
        import torch

        threads = os.environ.get("HEYIM_ENGINE_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit():
            torch.set_num_threads(int(threads))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    child = EngineChild(MessageWriter(out), device=args.device, precision=args.precision,
                        compute_units=args.compute_units or None, log_lines=held)
    try:
        child.serve(sys.stdin.buffer)
    except BrokenPipeError:  # the parent went away
        pass
    # The model is closed and every message is out: skip the interpreter's teardown (seconds
    # with torch loaded); the system takes the memory back at once.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)
