"""Prompt styles in AUTOMATIC1111's styles.csv format."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from heyim_desktop.core.errors import InvalidRequest, StorageError
from heyim_desktop.store.styles import (
    PromptStyle,
    StyleBook,
    StylesFileError,
    apply_styles,
    format_styles_csv,
    merge_prompt,
    parse_styles_csv,
)

#: A file as AUTOMATIC1111 writes it (csv.DictWriter, UTF-8 with BOM, CRLF): commas, quotes and
#: a line break inside fields are quoted, quotes doubled.
A1111_FILE = (
    "\ufeffname,prompt,negative_prompt\r\n"
    'Cinematic,"cinematic still of {prompt}, shallow depth of field","cartoon, ""anime"""\r\n'
    "Plain,highly detailed,\r\n"
    '"Two, lines","line one\nline two",\r\n'
)


def test_a1111_file_round_trips_byte_for_byte() -> None:
    styles = parse_styles_csv(A1111_FILE)
    assert styles == [
        PromptStyle("Cinematic", "cinematic still of {prompt}, shallow depth of field", 'cartoon, "anime"'),
        PromptStyle("Plain", "highly detailed", ""),
        PromptStyle("Two, lines", "line one\nline two", ""),
    ]
    assert "\ufeff" + format_styles_csv(styles) == A1111_FILE


def test_old_name_text_columns_are_read() -> None:
    assert parse_styles_csv("name,text\nOld,retro\n") == [PromptStyle("Old", "retro", "")]


def test_not_a_styles_file() -> None:
    with pytest.raises(StylesFileError, match="not a styles file"):
        parse_styles_csv("a,b\n1,2\n")


def test_placeholder_wraps_and_plain_style_appends() -> None:
    assert merge_prompt("cinematic still of {prompt}, film", "a fox") == "cinematic still of a fox, film"
    assert merge_prompt("highly detailed", "a fox ") == "a fox, highly detailed"
    assert merge_prompt("highly detailed", "") == "highly detailed"
    assert merge_prompt("", "a fox") == "a fox"
    styles = parse_styles_csv(A1111_FILE)[:2]
    assert apply_styles("a fox", "blur", styles) == (
        "cinematic still of a fox, shallow depth of field, highly detailed", 'blur, cartoon, "anime"')


def test_book_saves_atomically_and_resolves_names(tmp_path: Path) -> None:
    book = StyleBook(tmp_path / "styles.csv")
    assert book.styles() == []
    book.put(PromptStyle("A", "{prompt}, a"))
    book.put(PromptStyle("B", "b", "nb"))
    book.put(PromptStyle("A", "{prompt}, a2"))  # replaced, order kept for the others
    assert book.names() == ["B", "A"]
    assert book.expand("x", "", ["A", "B"]) == ("x, a2, b", "nb")
    assert (tmp_path / "styles.csv").read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]  # no temp file left
    with pytest.raises(InvalidRequest) as err:
        book.resolve(["C"])
    assert err.value.field == "styles" and "B, A" in str(err.value)
    with pytest.raises(InvalidRequest):
        book.save([PromptStyle("A"), PromptStyle("A")])
    assert book.remove("B") and not book.remove("B")


def test_import_from_an_a1111_install_keeps_ours_on_a_clash(tmp_path: Path) -> None:
    install = tmp_path / "stable-diffusion-webui"
    install.mkdir()
    (install / "styles.csv").write_text(A1111_FILE, encoding="utf-8", newline="")
    before = (install / "styles.csv").read_bytes()
    book = StyleBook(tmp_path / "heyim" / "styles.csv")
    book.put(PromptStyle("Plain", "ours"))
    added, skipped = book.import_file(tmp_path)  # the parent of the install works too
    assert added == ["Cinematic", "Two, lines"] and skipped == ["Plain"]
    assert book.resolve(["Plain"])[0].prompt == "ours"
    assert (install / "styles.csv").read_bytes() == before  # the other install is only read
    with pytest.raises(StylesFileError, match="No styles.csv"):
        book.import_file(tmp_path / "heyim-empty" if (tmp_path / "heyim-empty").mkdir() is None else tmp_path)


def test_disk_full_is_a_storage_error_and_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = StyleBook(tmp_path / "styles.csv")
    book.put(PromptStyle("Keep", "me"))
    before = (tmp_path / "styles.csv").read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="disk is full"):
        book.put(PromptStyle("New", "x"))
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]
