"""Re-run issue 12's adversarial round for files and storage: data loss, disk full, hostile databases, fuzz.

    .venv/bin/python bench/adversarial_store.py [--fuzz 40000] [--real-fs auto|yes|no]

Prints, per group, how many cases held (clear error or correct result, no traceback, no partial
file, foreign files byte-identical) and, for the A1111 parser, fuzz inputs per second and the
slowest input. Disk-full cases run on a real, tiny, full tmpfs when the process may mount one
(root on Linux; ``--real-fs auto``), else with injected ENOSPC/EROFS errors; the report says which.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import hashlib
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from heyim_desktop.core.errors import DiskFull, StorageError, UserFacingError  # noqa: E402
from heyim_desktop.core.request import GenerationRequest  # noqa: E402
from heyim_desktop.core.result import GeneratedImage, GenerationResult  # noqa: E402

Case = Callable[[Path], str | None]  # returns None when the case held, else what went wrong


def result(prompt: str = "a fox", seed: int = 1, count: int = 1) -> GenerationResult:
    req = GenerationRequest(prompt=prompt, seed=seed, count=count, width=64, height=64)
    images = tuple(GeneratedImage(Image.effect_noise((64, 64), 40 + i).convert("RGB"), s, i)
                   for i, s in enumerate(req.image_seeds()))
    return GenerationResult(req, images, "tiny", "torch-cpu", {})


def files(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


@contextlib.contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    """Replace ``owner.name`` for the duration (the bench's own monkeypatch)."""
    real = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, real)


def run_case(name: str, case: Case, workdir: Path) -> tuple[bool, str]:
    folder = workdir / name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True)
    try:
        problem = case(folder)
    except Exception:  # a traceback is exactly what this round looks for
        return False, "traceback: " + traceback.format_exc().strip().splitlines()[-1]
    return problem is None, problem or "held"


def expect_full(fn: Callable[[], Any], folder_named: Path, *, words: str = "full") -> str | None:
    try:
        fn()
    except DiskFull as exc:
        if str(folder_named) not in str(exc) and str(folder_named.parent) not in str(exc):
            return f"the message does not name the folder: {exc}"
        if words not in str(exc):
            return f"the message does not say {words!r}: {exc}"
        return None
    except StorageError as exc:
        return None if words in str(exc) else f"StorageError without {words!r}: {exc}"
    return "no error on a full disk"


# -- a real tiny full file system, or injected errors ---------------------------------------
class FullDisk:
    """A folder on a tiny tmpfs with ``free`` bytes left; ``real`` False: ENOSPC is injected instead."""

    def __init__(self, base: Path, real: bool) -> None:
        self.base, self.real = base, real

    @contextlib.contextmanager
    def folder(self, free: int = 0, read_only: bool = False) -> Iterator[Path]:
        mount = Path(tempfile.mkdtemp(dir=self.base))
        if not self.real:
            yield mount
            return
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)

    def fill(self, mount: Path, free: int) -> None:
        """Take every free byte, then give ``free`` bytes back (unbuffered writes: nothing left to flush)."""
        if not self.real:
            return
        fd = os.open(mount / "filler.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        if free:
            size = (mount / "filler.bin").stat().st_size
            os.truncate(mount / "filler.bin", max(0, size - free))

    def make_read_only(self, mount: Path) -> None:
        if self.real:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    @contextlib.contextmanager
    def injected(self, errno_code: int = errno.ENOSPC) -> Iterator[None]:
        """Without a real full disk: every fsync and Image.save fails as a full disk would."""
        if self.real:
            yield
            return
        def fail(*a: Any, **k: Any) -> Any:
            raise OSError(errno_code, os.strerror(errno_code))

        with patched(os, "fsync", fail), patched(Image.Image, "save", fail):
            yield


def can_mount(base: Path) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    probe = Path(tempfile.mkdtemp(dir=base))
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=False)
    return ok


def disk_full_cases(disk: FullDisk) -> dict[str, Case]:
    from heyim_desktop.api.security import resolve_token
    from heyim_desktop.core.output import write_png_atomic
    from heyim_desktop.store import HistoryStore
    from heyim_desktop.store.preferences import Preferences, save_preferences

    def history_save(free: int) -> Case:
        def case(_: Path) -> str | None:
            with disk.folder() as mount:
                store = HistoryStore.open(mount / "history")
                store.save_result(result())
                disk.fill(mount, free)
                with disk.injected():
                    problem = expect_full(lambda: [store.save_result(result(f"p{i}", i, 4)) for i in range(40)],
                                          mount / "history")
                store.close()
                (mount / "filler.bin").unlink(missing_ok=True)
                with HistoryStore.open(mount / "history") as again:
                    if again.integrity_check() != "ok":
                        return "damaged after space was freed"
                    if any(n.endswith(".part") for n in files(mount / "history")):
                        return "a partial file was left"
                return problem
        return case

    def thumbnails(_: Path) -> str | None:
        with disk.folder() as mount:
            store = HistoryStore.open(mount / "history")
            entry = store.save_result(result())[0]
            disk.fill(mount, 0)
            with disk.injected():
                problem = expect_full(lambda: store.thumbnail_path(entry.id, 256), mount / "history")
            store.close()
            left = [n for n in files(mount / "history" / "thumbnails")]
            return problem or (f"left {left}" if left else None)

    def preferences(_: Path) -> str | None:
        with disk.folder() as mount:
            save_preferences(Preferences(default_steps=12), mount)
            before = files(mount)
            disk.fill(mount, 0)
            before["filler.bin"] = files(mount).get("filler.bin", "")
            with disk.injected():
                problem = expect_full(lambda: save_preferences(Preferences(default_steps=99, model_folders=(
                    "x" * 5000,)), mount), mount)
            return problem or (None if files(mount) == {k: v for k, v in before.items() if v} else "files changed")

    def api_token(_: Path) -> str | None:
        os.environ.pop("HEYIM_API_TOKEN", None)
        with disk.folder() as mount:
            disk.fill(mount, 0)
            with disk.injected():
                problem = expect_full(lambda: resolve_token(None, mount), mount)
            if (mount / "api-token").exists():
                return "a token file was left on the full disk"
            (mount / "filler.bin").unlink(missing_ok=True)
            token, _where = resolve_token(None, mount)
            return problem or (None if token else "no token after space was freed")

    def png_out(overwrite: bool) -> Case:
        def case(_: Path) -> str | None:
            with disk.folder() as mount:
                (mount / "out").mkdir()
                disk.fill(mount, 0)
                with disk.injected():
                    problem = expect_full(lambda: write_png_atomic(Image.effect_noise((256, 256), 80).convert("RGB"),
                                                                   mount / "out" / "x.png", "p", overwrite=overwrite),
                                          mount / "out")
                return problem or (f"left {files(mount / 'out')}" if files(mount / "out") else None)
        return case

    def demo_model(free: int) -> Case:
        def case(_: Path) -> str | None:
            from diffusers import ModelMixin

            from heyim_desktop.core import demo_model as module
            from heyim_desktop.core.demo_model import build_demo_model

            def no_space(*a: Any, **k: Any) -> Any:
                if free:  # as safetensors reports it: its own error type, the OS error as text
                    raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
                raise OSError(errno.ENOSPC, "No space left on device")

            owner, name = (ModelMixin, "save_pretrained") if free else (module, "write_tokenizer")
            with contextlib.ExitStack() as stack:
                if not disk.real:
                    stack.enter_context(patched(owner, name, no_space))
                mount = stack.enter_context(disk.folder())
                disk.fill(mount, free)
                problem = expect_full(lambda: build_demo_model(mount / "demo"), mount)
                left = [n for n in files(mount) if n != "filler.bin"]
            return problem or (f"left {left[:3]}" if left else None)
        return case

    def models_import_mid_copy(folder: Path) -> str | None:
        from heyim_desktop.cli import main
        from heyim_desktop.core.demo_model import build_demo_model

        src = build_demo_model(folder / "tiny-sd")
        calls = {"n": 0}
        real_copy = shutil.copyfile

        def taken_mid_copy(a: Any, b: Any, *x: Any, **k: Any) -> Any:
            calls["n"] += 1
            if calls["n"] < 4:
                return real_copy(a, b)
            Path(b).write_bytes(Path(a).read_bytes()[:100])  # someone else took the space meanwhile
            raise OSError(errno.ENOSPC, "No space left on device")

        with patched(shutil, "copyfile", taken_mid_copy):
            code = main(["--data-dir", str(folder / "data"), "models", "import", str(src)])
        left = files(folder / "data" / "models")
        return None if code == 4 and not left else f"exit {code}, left {list(left)[:3]}"

    def read_only(_: Path) -> str | None:
        with disk.folder() as mount:
            HistoryStore.open(mount / "history").close()
            disk.make_read_only(mount)
            if disk.real:
                try:
                    HistoryStore.open(mount / "history").close()
                except StorageError as exc:
                    return None if "read-only" in str(exc) else f"said: {exc}"
                return "opened for writing on a read-only file system"
            with disk.injected(errno.EROFS):
                return expect_full(lambda: write_png_atomic(Image.new("RGB", (8, 8)), mount / "x.png", "p"), mount,
                                   words="read-only")

    return {
        "history save, 0 KB free": history_save(0),
        "history save, 24 KB free": history_save(24 * 1024),
        "thumbnail, 0 KB free": thumbnails,
        "preferences, 0 KB free": preferences,
        "api-token, 0 KB free, then restart": api_token,
        "generate --out PNG, 0 KB free": png_out(False),
        "batch collect PNG, 0 KB free": png_out(True),
        "demo model, 0 KB free": demo_model(0),
        "demo model, 24 KB free": demo_model(24 * 1024),
        "models import, space taken mid-copy": models_import_mid_copy,
        "read-only file system": read_only,
    }


# -- hostile history databases ----------------------------------------------------------------
def hostile_db_cases() -> dict[str, Case]:
    from heyim_desktop.store import HistoryStore, opening, schema

    def foreign(sql: str, journal: str = "DELETE") -> Callable[[Path], None]:
        def make(db: Path) -> None:
            conn = sqlite3.connect(db)
            conn.execute(f"PRAGMA journal_mode={journal}")
            conn.executescript(sql)
            conn.commit()
            conn.close()
        return make

    makers: dict[str, Callable[[Path], object]] = {
        "another app's entries table": foreign("CREATE TABLE entries (id INTEGER PRIMARY KEY, t TEXT);"),
        "another app's entries table (WAL)": foreign("CREATE TABLE entries (id INTEGER PRIMARY KEY);", "WAL"),
        "user_version 1, another schema": foreign("CREATE TABLE entries (id, path); CREATE TABLE tags (a);"
                                                  "PRAGMA user_version = 1;"),
        "negative user_version": foreign("CREATE TABLE t (x); PRAGMA user_version = -2;"),
        "another application id": foreign("CREATE TABLE t (x); PRAGMA application_id = 42;"),
        "foreign file without entries": foreign("CREATE TABLE notes (body);"),
        "user_version 77 without our id": foreign("CREATE TABLE t (x); PRAGMA user_version = 77;"),
        "SQLite magic + garbage": lambda db: db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192)),
        "random bytes": lambda db: db.write_bytes(os.urandom(8192)),
        "truncated header": lambda db: db.write_bytes(b"SQLite format 3\x00\x10\x00"),
    }
    cases: dict[str, Case] = {}
    for label, make in makers.items():
        def case(folder: Path, make: Callable[[Path], object] = make) -> str | None:
            root = folder / "history"
            root.mkdir()
            make(root / "history.sqlite3")
            before = files(root)
            try:
                HistoryStore.open(root).close()
                return "opened as if it were a history"
            except UserFacingError as exc:
                if "newer" in str(exc) or "damaged (" in str(exc):
                    return f"misleading message: {exc}"
            return None if files(root) == before else "the file or folder was modified"
        cases[label] = case

    def newer(folder: Path) -> str | None:
        root = folder / "history"
        HistoryStore.open(root).close()
        sqlite3.connect(root / "history.sqlite3").execute("PRAGMA user_version = 9").connection.close()
        before = files(root)
        try:
            HistoryStore.open(root)
        except UserFacingError as exc:
            return None if "newer HeyIm" in str(exc) and files(root) == before else f"said {exc}"
        return "opened a newer history"

    def locked(folder: Path) -> str | None:
        root = folder / "history"
        HistoryStore.open(root).close()
        schema.BUSY_TIMEOUT_S, opening.WRITE_TIMEOUT_S = 0.1, 0.1
        other = sqlite3.connect(root / "history.sqlite3", isolation_level=None)
        other.execute("PRAGMA journal_mode=DELETE")
        other.execute("BEGIN EXCLUSIVE")
        try:
            HistoryStore.open(root).close()
            return "opened while another program held an exclusive lock"
        except StorageError as exc:
            return None if "busy in another program" in str(exc) else f"said {exc}"
        finally:
            other.execute("ROLLBACK")
            other.close()
            schema.BUSY_TIMEOUT_S, opening.WRITE_TIMEOUT_S = 5.0, 10.0

    def read_only_folder(folder: Path) -> str | None:
        root = folder / "history"
        HistoryStore.open(root).close()
        real = os.access
        with patched(os, "access", lambda p, m: False if m == os.W_OK else real(p, m)):
            try:
                HistoryStore.open(root).close()
                return "opened a read-only folder for writing"
            except StorageError as exc:
                return None if "read-only" in str(exc) else f"said {exc}"

    cases["a newer HeyIm's history"] = newer
    cases["exclusive lock by another program (rollback journal)"] = locked
    cases["read-only folder"] = read_only_folder
    return cases


# -- data loss -----------------------------------------------------------------------------
def data_loss_cases() -> dict[str, Case]:
    from heyim_desktop.store import HistoryStore

    def shared_pictures(folder: Path) -> str | None:
        pics = folder / "Pictures"
        (pics / "2019-holiday").mkdir(parents=True)
        (pics / ".tmp-thesis-draft.docx").write_bytes(b"draft")
        (pics / "2019-holiday" / ".tmp-upload.part").write_bytes(b"part")
        for name in ("a.png", "2019-holiday/b.png", "2024-05/20240501-101010-7-mine.png"):
            (pics / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(pics / name)
        before = files(pics)
        with HistoryStore.open(folder / "h", images_dir=pics) as store:
            for i in range(4):
                store.save_result(result(f"ours {i}", i))
            store.keep_limit = 2
            store.enforce_keep_limit()
        with HistoryStore.open(folder / "h", images_dir=pics) as store:
            ours = {str(e.path.relative_to(pics)) for e in store.page(0, 100)}
        after = {k: v for k, v in files(pics).items() if k not in ours}
        return None if after == before and len(ours) == 2 else f"user files changed: {set(before) ^ set(after)}"

    def folder_change(folder: Path) -> str | None:
        with HistoryStore.open(folder / "h", images_dir=folder / "chosen") as store:
            for i in range(3):
                store.save_result(result(f"x{i}", i))
        with HistoryStore.open(folder / "h") as store:
            missing = [e for e in store.page(0, 10) if not e.path.exists()]
        return f"{len(missing)} of 3 entries point at missing files" if missing else None

    def same_name_two_stores(folder: Path) -> str | None:
        errors: list[str] = []
        a, b = HistoryStore.open(folder / "h"), HistoryStore.open(folder / "h")

        def run(store: HistoryStore) -> None:
            try:
                for _ in range(150):
                    store.save_result(result("same", 42))
            except Exception as exc:  # counted below
                errors.append(repr(exc))

        threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
        with patched(time, "strftime", lambda fmt, *a: "2026-01" if fmt == "%Y-%m" else "20260101-120000"):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        n_files = len(list((folder / "h" / "images" / "2026-01").glob("*.png")))
        n_rows = a.count()
        a.close()
        b.close()
        if errors:
            return f"{len(errors)} errors, e.g. {errors[0]}"
        return None if n_files == n_rows == 300 else f"{300 - n_files} images overwritten, {n_rows} rows"

    def undeletable(folder: Path) -> str | None:
        root = folder / "h"
        with HistoryStore.open(root) as store:
            entry = store.save_result(result())[0]
            with store._write() as conn:
                conn.execute("UPDATE entries SET deleting = 1")
        real = Path.unlink

        def refuse(self: Path, missing_ok: bool = False) -> None:
            if self == entry.path:
                raise PermissionError(1, "Operation not permitted")
            real(self, missing_ok=missing_ok)

        with patched(Path, "unlink", refuse):
            for _ in range(2):
                with HistoryStore.open(root) as store:
                    back = store.get(entry.id)
                    if back is None or not back.delete_error:
                        return "the entry is not shown as 'could not delete'"
        return None

    return {
        "images folder shared with the user's Pictures": shared_pictures,
        "image folder changed (serve opens the default)": folder_change,
        "two stores, same prompt, seed and second (300 saves)": same_name_two_stores,
        "an undeletable file at open": undeletable,
    }


# -- fuzzing the A1111 parser and hostile PNGs ---------------------------------------------
def fuzz(n: int, seed: int = 7) -> tuple[int, float, float, str, int]:
    from heyim_desktop.core.metadata import parse_parameters

    rng = random.Random(seed)
    base = ["masterpiece, a castle\nNegative prompt: lowres\nSteps: 28, Sampler: DPM++ 2M, CFG scale: 6.5, "
            'Seed: 3, Size: 512x768, Lora hashes: "a: 1, b: 2", Model: v1-5', "x\nSteps: 1, Seed: 2, Size: 8x8"]
    specials = ["a" * 20_000 + "\nSteps: 1, Seed: 1, Size: 8x8", "p\n" + "Steps: 20, " + "x" * 40_000,
                "p\n" + "a:" * 20_000, "p\n" + '"' * 40_000, "p\nSteps: 1e999, Seed: " + "9" * 5000 + ", Size: 8x8",
                "p\n" + "k" * 70 + ": v, " * 8000]
    alphabet = 'abc:,"\\\n -.0123456789eE+xinfaN[]{}\u00e9'
    failures = 0
    slowest, slowest_text = 0.0, ""
    parse_parameters(base[0]).request_settings()  # warm-up: the first call imports the request module
    gc.disable()  # a collection pause would be charged to whichever input happened to trigger it
    t_start = time.perf_counter()
    for i in range(n):
        if i % 1000 == 0:
            gc.collect()
        if i < len(specials):
            text = specials[i]
        else:
            chars = list(rng.choice(base))
            for _ in range(rng.randint(1, 16)):
                pos = rng.randrange(len(chars) + 1)
                chars.insert(pos, rng.choice(alphabet) * rng.choice((1, 1, 3, 100, 2000)))
            text = "".join(chars)
        t0 = time.thread_time()  # CPU time: a 2-core machine shared with others preempts any input
        try:
            p = parse_parameters(text)
            p.request_settings()
        except ValueError:
            pass  # "empty parameters text" is the documented refusal
        except Exception:  # a crash is what fuzzing looks for
            failures += 1
        took = time.thread_time() - t0
        if took > slowest:
            slowest, slowest_text = took, text
    total = time.perf_counter() - t_start
    gc.enable()
    # Re-time the slowest input: on a shared machine one pause can make any input look slow.
    again = []
    for _ in range(5):
        t0 = time.perf_counter()
        with contextlib.suppress(ValueError):
            parse_parameters(slowest_text).request_settings()
        again.append(time.perf_counter() - t0)
    desc = (f"{len(slowest_text)} chars, starts {slowest_text[:24]!r}; re-timed {min(again) * 1000:.2f} ms")
    return n, n / total, slowest, desc, failures


#: The pair regex HeyIm used before issue 12 (its lazy key makes long lines quadratic): the peer.
OLD_PAIR_RE = r'\s*(\w[\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)'


def peer_compare() -> list[str]:
    """The new parser against the old regex on the two texts the round found slow."""
    import re

    from heyim_desktop.core.metadata import parse_parameters

    texts = {  # long runs of key characters with no colon: the old regex rescans the rest of the line from each
        "20 KB A1111 text": "a castle\n" + "detailed sunset sky " * 1000,
        "40,000-char last line": "p\n" + "a" * 40_000,
    }
    old = re.compile(OLD_PAIR_RE)
    lines = []
    for label, text in texts.items():
        t0 = time.perf_counter()
        parse_parameters(text).request_settings()
        new_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(old.finditer(text.split("\n")[-1]))
        old_s = time.perf_counter() - t0
        lines.append(f"{label} ({len(text):,} chars): now {new_s * 1000:.1f} ms, the old regex {old_s * 1000:,.0f} ms")
    return lines


def text_chunk_memory(folder: Path) -> str:
    """Peak Python memory reading the parameters of a PNG with 60 text chunks of 1 MB: Pillow's info vs ours."""
    import tracemalloc

    from heyim_desktop.core.metadata import read_parameters_text

    path = folder / "chunks.png"
    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for i in range(60):
        info.add_text(f"junk{i}", "j" * (1024 * 1024 - 100))
    info.add_text("parameters", "a fox\nSteps: 20, Seed: 1, Size: 64x64")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    peaks = []
    for reader in (lambda: Image.open(path).info.get("parameters"), lambda: read_parameters_text(path)):
        tracemalloc.start()
        try:
            text = reader()
        except Exception as exc:  # Pillow refuses past MAX_TEXT_MEMORY: that is a figure too
            text = f"refused: {type(exc).__name__}"
        peaks.append((tracemalloc.get_traced_memory()[1] / 1e6, text))
        tracemalloc.stop()
    (old_mb, old_text), (new_mb, new_text) = peaks
    return (f"PNG with 60 x 1 MB text chunks: Image.open().info peaks at {old_mb:.1f} MB, "
            f"read_parameters_text at {new_mb:.2f} MB (same text: {old_text == new_text})")


def hostile_pngs(folder: Path) -> tuple[int, int, str | None]:
    from heyim_desktop.store import HistoryStore
    from heyim_desktop.store.entry_data import HISTORY_MARKER

    month = folder / "h" / "images" / "2026-01"
    month.mkdir(parents=True)
    mark = f'"{HISTORY_MARKER}": 1'
    bodies = [
        "{" + mark + ', "seed": Infinity, "steps": 1e999}', "{" + mark + ', "a": ' + "[" * 60_000 + "]" * 60_000 + "}",
        "{" + mark + ', "seed": [1, 2], "prompt": ["a"]}', "{" + mark + ', "seed": ' + "9" * 5000 + "}",
        "{" + mark + ', "width": {"a": 1}, "guidance": "x"}', "not json", "{" + mark + "}",
    ]
    for i, body in enumerate(bodies):
        info = PngInfo()
        info.add_text("parameters", "x\nSteps: 1e999, Seed: " + "9" * (i * 1000) + ", Size: 8x8")
        info.add_text("heyim", body)
        for j in range(200):
            info.add_text(f"junk{j}", "j" * 2000)
        Image.new("RGB", (4, 4)).save(month / f"20260101-000000-{i}-hostile.png", pnginfo=info)
    (month / "20260101-000000-99-cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    try:
        with HistoryStore.open(folder / "h") as store:
            indexed = store.count()
            for e in store.page(0, 100):
                e.request_settings()
    except Exception as exc:  # what the round counts
        return len(bodies) + 1, 0, f"{type(exc).__name__}: {exc}"
    return len(bodies) + 1, indexed, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=40_000, help="fuzzed A1111 texts (default 40,000)")
    parser.add_argument("--real-fs", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--no-peer", action="store_true", help="skip timing the old parser (about 50 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        real = {"yes": True, "no": False}.get(args.real_fs, None)
        if real is None:
            real = can_mount(work)
        groups = {
            "data loss": data_loss_cases(),
            f"disk full ({'real tiny tmpfs' if real else 'injected ENOSPC/EROFS'})": disk_full_cases(FullDisk(work, real)),
            "hostile history databases": hostile_db_cases(),
        }
        for group, cases in groups.items():
            held = 0
            print(f"\n{group}")
            for name, case in cases.items():
                ok, detail = run_case(name, case, work / "cases")
                held += ok
                print(f"  {'held ' if ok else 'FAILED'}  {name}" + ("" if ok else f": {detail}"))
            print(f"  -> {held} of {len(cases)} held")
        print("\n" + text_chunk_memory(work / "chunks"))
        total, indexed, crash = hostile_pngs(work / "pngs")
        print(f"\nhostile PNGs in the images folder: {total} files, history opened: {crash is None}"
              f"{'' if crash is None else ' (' + crash + ')'}, indexed {indexed}, skipped {total - indexed}")
    n, rate, slowest, desc, failures = fuzz(args.fuzz)
    if not args.no_peer:
        for line in peer_compare():
            print(line)
    print(f"A1111 fuzz: {n} inputs, {rate:,.0f} inputs/s, {failures} crashes, slowest {slowest * 1000:.1f} ms ({desc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
