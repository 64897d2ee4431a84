"""The child side of test_coreml_runtime_choices' two-process compile test (imports kept light)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def compile_in_child(root: str, package: str, log: str, barrier: Any, compiling: Any, arrived: Any, first: bool) -> None:
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache

    def compile_fn(src: Path, dest: Path) -> None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("compile\n")
        compiling.set()
        arrived.wait(10)  # hold the lock until the other process is at the door
        dest.mkdir()
        (dest / "model.mil").write_text("compiled")

    cache = CompiledModelCache(Path(root), compile_fn=compile_fn)
    barrier.wait(30)
    if not first:
        compiling.wait(30)
        arrived.set()
    path, _ = cache.compiled(Path(package))
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{path.name} {(path / 'model.mil').read_text()}\n")
