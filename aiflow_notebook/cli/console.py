"""Output helpers for the ``aiflow`` command line: readable tables, or JSON with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO | None = None,
                empty: str = "(none)") -> None:
    """Print ``rows`` as an aligned text table with ``columns`` as headers."""
    out = out or sys.stdout
    if not rows:
        print(empty, file=out)
        return
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=out or sys.stdout)
