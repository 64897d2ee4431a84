"""Reading the few PNG text chunks HeyIm uses, and nothing else, within fixed limits.

``Image.open`` keeps every text chunk of a file in memory (up to Pillow's 64 MB budget), and a
hostile file can carry thousands. This reader walks the chunk list, seeks past everything but
the keywords asked for, and decompresses those with Pillow's per-chunk limit.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Most chunks a file may have before we stop looking (real files have a handful to a few hundred).
MAX_CHUNKS = 20_000


def _chunk_limit() -> int:
    from PIL import PngImagePlugin

    return int(PngImagePlugin.MAX_TEXT_CHUNK) or 1024 * 1024


@dataclass
class PngText:
    texts: dict[str, str] = field(default_factory=dict)
    #: Keywords whose chunk was over the size limit and was skipped.
    skipped: list[str] = field(default_factory=list)


def is_png(path: "str | Path | BinaryIO") -> bool:
    if not isinstance(path, (str, Path)):  # an open binary file (bytes from an HTTP body)
        pos = path.tell()
        try:
            return path.read(8) == PNG_SIGNATURE
        finally:
            path.seek(pos)
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def read_png_text(path: "str | Path | BinaryIO", keys: Iterable[str] = ("parameters", "heyim")) -> PngText:
    """The text of the chunks named ``keys`` (first one of each wins). Raises OSError / ValueError."""
    if not isinstance(path, (str, Path)):
        pos = path.tell()
        try:
            return _read(path, frozenset(keys))
        finally:
            path.seek(pos)
    with open(path, "rb") as fh:
        return _read(fh, frozenset(keys))


def _read(fh: BinaryIO, keys: frozenset[str]) -> PngText:
    if fh.read(8) != PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    out = PngText()
    limit = _chunk_limit()
    for _ in range(MAX_CHUNKS):
        head = fh.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND" or length > 0x7FFFFFFF:
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            fh.seek(length + 4, 1)
            continue
        # The keyword comes first (1-79 bytes, then a NUL): peek at it before reading the rest.
        peek = fh.read(min(length, 80))
        keyword, sep, _rest = peek.partition(b"\0")
        name = keyword.decode("latin-1")
        if not sep or name not in keys or name in out.texts:
            fh.seek(length - len(peek) + 4, 1)
            continue
        if length > limit:
            out.skipped.append(name)
            log.info("PNG text chunk %r is over %d bytes; skipped", name, limit)
            fh.seek(length - len(peek) + 4, 1)
            continue
        data = peek + fh.read(length - len(peek))
        fh.seek(4, 1)  # CRC
        text = _decode(kind, data[len(keyword) + 1:], limit)
        if text is None:
            out.skipped.append(name)
        else:
            out.texts[name] = text
        if keys <= out.texts.keys():
            break
    return out


def _inflate(data: bytes, limit: int) -> bytes | None:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, limit)
    except zlib.error:
        return None
    if d.unconsumed_tail:
        return None  # would decompress past the limit
    return raw


def _decode(kind: bytes, body: bytes, limit: int) -> str | None:
    if kind == b"tEXt":
        return body.decode("latin-1")
    if kind == b"zTXt":
        if not body or body[0] != 0:
            return None
        raw = _inflate(body[1:], limit)
        return raw.decode("latin-1") if raw is not None else None
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    if len(body) < 2:
        return None
    flag, method = body[0], body[1]
    parts = body[2:].split(b"\0", 2)
    if len(parts) < 3:
        return None
    text = parts[2]
    if flag:
        if method != 0:
            return None
        inflated = _inflate(text, limit)
        if inflated is None:
            return None
        text = inflated
    return text.decode("utf-8", "replace")
