"""Datasets as text: one line per row, in a file or a directory of part files (as Flink and Spark write them).

The one reader and writer of that form. A row is a CSV line (its fields typed by the dataset's schema when
the schema names types) or, for a ``.jsonl``/``.json`` dataset, a JSON document. A Flink file sink writes
``part-<uid>-<n>`` files, possibly in bucket subdirectories, and keeps a file hidden until a checkpoint or
the end of input commits it (``.part-…inprogress…``); what a reader may see is what is committed: every
file under the directory none of whose path parts (below the directory) starts with ``.`` or ``_``
(``_SUCCESS`` markers, ``_temporary`` directories).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any


def local_path(uri: str | Path) -> Path:
    """The local path of a dataset URI (``file://`` or a plain path)."""
    return Path(str(uri).removeprefix("file://"))


def committed_parts(directory: str | Path) -> list[Path]:
    """The committed part files under ``directory``, in name order (no directory: none)."""
    root = local_path(directory)
    if not root.is_dir():
        return []
    return sorted(part for part in root.rglob("*") if part.is_file()
                  and not any(name.startswith((".", "_")) for name in part.relative_to(root).parts))


def read_lines(uri: str | Path) -> list[str]:
    """Every non-empty line of a dataset: its file, or its directory's committed part files."""
    path = local_path(uri)
    parts = committed_parts(path) if path.is_dir() else [path] if path.exists() else []
    lines: list[str] = []
    for part in parts:
        with part.open() as fh:
            lines.extend(line.rstrip("\n") for line in fh if line.strip())
    return lines


def read_rows(uri: str | Path, schema: Any = None) -> list[Any]:
    """Every committed row of the dataset at ``uri`` (``af.read_rows``): a file, or a directory of part files
    (files in progress and hidden ones are left out). A missing path has no rows."""
    return [parse_line(line, str(uri), schema) for line in read_lines(uri)]


def clear_parts(directory: Path) -> None:
    """Remove the part files a previous run wrote into ``directory`` (and their in-progress, hidden forms), so
    a batch job that runs again replaces the dataset instead of adding to it. Only part files go: anything
    else a user put there stays."""
    for part in directory.iterdir():
        if part.is_file() and part.name.lstrip(".").startswith("part-"):
            part.unlink()


def parse_line(line: str, uri: str, schema: Any) -> Any:
    """One text line of a dataset as a row."""
    if uri.endswith((".jsonl", ".json")):
        return json.loads(line)
    fields = next(csv.reader([line]))
    if isinstance(schema, dict):
        return [_convert(value, kind) for value, kind in zip(fields, schema.values(), strict=False)]
    return fields


def format_row(row: Any, uri: str) -> str:
    """One row of a dataset as a text line."""
    if uri.endswith((".jsonl", ".json")):
        return json.dumps(row)
    if isinstance(row, str):
        return row
    if not isinstance(row, list | tuple):
        row = [row]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(row)
    return buffer.getvalue()


def _convert(value: str, kind: Any) -> Any:
    kind = str(kind).lower()
    try:
        if kind in ("int", "bigint", "long", "integer"):
            return int(value)
        if kind in ("float", "double", "real"):
            return float(value)
        if kind in ("bool", "boolean"):
            return value.strip().lower() in ("1", "true", "yes")
    except ValueError:
        return None
    return value
