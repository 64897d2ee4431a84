"""``heyim-desktop styles``: list, add, remove and import prompt styles (AUTOMATIC1111's styles.csv)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_styles_parser(sub: Any) -> None:
    styles = sub.add_parser("styles", help="prompt styles (AUTOMATIC1111's styles.csv format): list, add, remove, import")
    actions = styles.add_subparsers(dest="styles_command", required=True, parser_class=type(styles))
    actions.add_parser("list", help="show every style and what it adds")
    add = actions.add_parser("add", help="add a style, or replace the one with that name")
    add.add_argument("name")
    add.add_argument("--prompt", default="", help="text added to the prompt; {prompt} marks where the prompt goes")
    add.add_argument("--negative", default="", help="text added to the negative prompt ({prompt} works here too)")
    remove = actions.add_parser("remove", help="delete a style")
    remove.add_argument("name")
    imp = actions.add_parser("import", help="copy the styles of an AUTOMATIC1111 install (its folder or its styles.csv)")
    imp.add_argument("location")


def add_generate_arguments(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--style", action="append", default=[], metavar="NAME",
                     help="apply a prompt style (repeat for several, applied in order; see `styles list`)")
    gen.add_argument("--clip-skip", type=int, default=1, metavar="N",
                     help="CLIP layers to stop before the end, as AUTOMATIC1111 counts: 1 = none (default), "
                          "2 for many anime SD 1.5 models (PyTorch engine)")


def expand(prompt: str, negative: str, names: list[str]) -> tuple[str, str]:
    """The prompts with ``--style`` applied (from HeyIm's styles file)."""
    if not names:
        return prompt, negative
    from heyim_desktop.store.styles import StyleBook

    return StyleBook.default().expand(prompt, negative, names, field="style")


def cmd_styles(args: argparse.Namespace) -> int:
    from heyim_desktop.store.styles import PromptStyle, StyleBook

    book = StyleBook.default()
    if args.styles_command == "list":
        styles = book.styles()
        if not styles:
            print(f"No styles yet ({book.path}). Add one with `styles add`, or `styles import` an AUTOMATIC1111 folder.",
                  file=sys.stderr)
        for style in styles:
            print(style.name)
            if style.prompt:
                print(f"  prompt:   {style.prompt}")
            if style.negative_prompt:
                print(f"  negative: {style.negative_prompt}")
        return 0
    if args.styles_command == "add":
        book.put(PromptStyle(args.name.strip(), args.prompt, args.negative))
        print(f"Saved style {args.name.strip()!r} in {book.path}", file=sys.stderr)
        return 0
    if args.styles_command == "remove":
        if not book.remove(args.name):
            from heyim_desktop.core.errors import InvalidRequest

            raise InvalidRequest("name", f"no style named {args.name!r}")
        print(f"Removed style {args.name!r}", file=sys.stderr)
        return 0
    added, skipped = book.import_file(args.location)
    print(f"Imported {len(added)} style(s) into {book.path}" + (f"; kept HeyIm's own for: {', '.join(skipped)}" if skipped else ""),
          file=sys.stderr)
    return 0
