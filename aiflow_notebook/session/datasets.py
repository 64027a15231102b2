"""Reading a dataset's rows and waiting for them, from a notebook (``af.read_rows``, ``af.wait_until``).

A dataset a Flink job writes is a directory of part files (one line per row); a streaming job commits its
part files on checkpoints, so what is readable here is what the job has committed. Lines are parsed as the
jobs parse them (CSV, typed by the schema's types when it names them; ``.jsonl``/``.json`` as JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_rows(uri: str | Path, schema: Any = None) -> list[Any]:
    """Every committed row of the dataset at ``uri``: a file, or a directory of part files (in-progress and
    hidden files, whose names start with ``.`` or ``_``, are left out). A missing path has no rows."""
    from aiflow_notebook.engines.flink_program import parse_line

    text = str(uri)
    path = Path(text.removeprefix("file://"))
    if path.is_dir():
        parts = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    else:
        parts = [path] if path.exists() else []
    rows: list[Any] = []
    for part in parts:
        with part.open() as fh:
            rows.extend(parse_line(line.rstrip("\n"), text, schema) for line in fh if line.strip())
    return rows


def wait_until(condition: Callable[[], T], timeout: float = 60.0, what: str | None = None,
               interval: float = 0.2) -> T:
    """Return ``condition()``'s first truthy value; after ``timeout`` seconds raise ``TimeoutError`` naming
    ``what`` was awaited (say it with numbers: "2000 scores of batch-1")."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(condition, "__name__", "condition")
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {name}")
        time.sleep(interval)
