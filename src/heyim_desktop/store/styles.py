"""Prompt styles, kept in AUTOMATIC1111's ``styles.csv`` format so files move both ways.

The file has a header ``name,prompt,negative_prompt`` and one row per style, written by
Python's csv module (fields with commas, quotes or line breaks are double-quoted, quotes
doubled) in UTF-8 with a byte-order mark, as AUTOMATIC1111 writes it. A style's prompt with
``{prompt}`` wraps the user's prompt at that place; one without is appended after a comma.
Several styles apply in the order given, each to the result of the one before.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from heyim_desktop.core.errors import InvalidRequest, StorageError, UserFacingError

log = logging.getLogger(__name__)

FILE_NAME = "styles.csv"
PLACEHOLDER = "{prompt}"
FIELDS = ("name", "prompt", "negative_prompt")
#: A styles file larger than this is refused (a real one is a few kilobytes).
MAX_FILE_BYTES = 4 * 1024 * 1024


class StylesFileError(UserFacingError):
    """A styles file that cannot be read or written."""


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompt(style_text: str, prompt: str) -> str:
    """One style applied to one prompt (or negative prompt), AUTOMATIC1111's rule."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative: str, styles: Sequence[PromptStyle]) -> tuple[str, str]:
    """The prompt and negative prompt after every style, in order."""
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative = merge_prompt(style.negative_prompt, negative)
    return prompt, negative


def parse_styles_csv(text: str) -> list[PromptStyle]:
    """Rows of an AUTOMATIC1111 styles file (also its old ``name,text`` form)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""), skipinitialspace=True)
    if reader.fieldnames is None:
        return []
    fields = [f.strip() for f in reader.fieldnames]
    if "name" not in fields or ("prompt" not in fields and "text" not in fields):
        raise StylesFileError("This is not a styles file: its first line must name the columns name, prompt, negative_prompt.")
    reader.fieldnames = fields
    out: dict[str, PromptStyle] = {}
    for row in reader:
        name = (row.get("name") or "").strip()
        if not name:
            continue
        prompt = row.get("prompt") if "prompt" in fields else row.get("text")
        out[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    return list(out.values())


def format_styles_csv(styles: Iterable[PromptStyle]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")  # csv's default dialect, as AUTOMATIC1111 writes
    writer.writerow(FIELDS)
    for style in styles:
        writer.writerow((style.name, style.prompt, style.negative_prompt))
    return buf.getvalue()


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StylesFileError(f"{path.name} is {size // 1024} KB; a styles file is at most {MAX_FILE_BYTES // 1024} KB.")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise StylesFileError(f"{path} is not a UTF-8 text file.") from None
    except OSError as exc:
        raise StylesFileError(f"Cannot read {path}: {exc.strerror or exc}.") from None


def find_a1111_styles(location: str | Path) -> Path:
    """The styles file of an AUTOMATIC1111 install: the folder itself or its ``styles.csv``."""
    path = Path(location).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / FILE_NAME, path / "stable-diffusion-webui" / FILE_NAME):
            if candidate.is_file():
                return candidate
        raise StylesFileError(f"No {FILE_NAME} in {path}. Choose the AUTOMATIC1111 folder (stable-diffusion-webui) or its {FILE_NAME}.")
    raise StylesFileError(f"{path} does not exist.")


class StyleBook:
    """HeyIm's own styles file: read on demand, written atomically. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> "StyleBook":
        from heyim_desktop.core.paths import data_dir

        return cls(data_dir() / FILE_NAME)

    def styles(self) -> list[PromptStyle]:
        with self._lock:
            if not self.path.is_file():
                return []
            return parse_styles_csv(_read_text(self.path))

    def names(self) -> list[str]:
        return [s.name for s in self.styles()]

    def resolve(self, names: Sequence[str], field: str = "styles") -> list[PromptStyle]:
        """The named styles in order; an unknown name is an error naming ``field``."""
        known = {s.name: s for s in self.styles()}
        missing = [n for n in names if n not in known]
        if missing:
            have = ", ".join(known) or "none yet"
            raise InvalidRequest(field, f"unknown style {missing[0]!r}; styles: {have}")
        return [known[n] for n in names]

    def expand(self, prompt: str, negative: str, names: Sequence[str], field: str = "styles") -> tuple[str, str]:
        return apply_styles(prompt, negative, self.resolve(names, field))

    def save(self, styles: Sequence[PromptStyle]) -> None:
        names = [s.name.strip() for s in styles]
        if any(not n for n in names):
            raise InvalidRequest("name", "a style needs a name")
        if len(set(names)) != len(names):
            raise InvalidRequest("name", "two styles have the same name")
        data = format_styles_csv(styles).encode("utf-8-sig")
        with self._lock:
            _write_atomic(self.path, data)

    def put(self, style: PromptStyle) -> None:
        """Add ``style``, or replace the one with its name."""
        styles = [s for s in self.styles() if s.name != style.name]
        self.save([*styles, style])

    def remove(self, name: str) -> bool:
        styles = self.styles()
        kept = [s for s in styles if s.name != name]
        if len(kept) == len(styles):
            return False
        self.save(kept)
        return True

    def import_file(self, location: str | Path) -> tuple[list[str], list[str]]:
        """Add the styles of an AUTOMATIC1111 install; ours win on a name clash.

        Returns (added names, names skipped because HeyIm already has a style so named).
        The other install's file is only read.
        """
        source = find_a1111_styles(location)
        incoming = parse_styles_csv(_read_text(source))
        current = self.styles()
        have = {s.name for s in current}
        added = [s for s in incoming if s.name not in have and s.name != "None"]
        skipped = [s.name for s in incoming if s.name in have]
        if added:
            self.save([*current, *added])
        log.info("imported %d style(s) from %s (%d already present)", len(added), source, len(skipped))
        return [s.name for s in added], skipped


def _write_atomic(path: Path, data: bytes) -> None:
    import errno

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    except OSError as exc:
        raise StorageError(f"Cannot save the styles in {path.parent}: {exc.strerror or exc}.") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageError(f"The disk is full: cannot save the styles in {path.parent}.") from exc
        raise StorageError(f"Cannot save the styles in {path.parent}: {exc.strerror or exc}.") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
