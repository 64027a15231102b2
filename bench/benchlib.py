"""What every benchmark here shares: one JSON line per figure, and percentiles."""

from __future__ import annotations

import json


def emit(bench: str, metric: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line (../shared/BENCHMARKS.md)."""
    print(json.dumps({"bench": bench, "metric": metric, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
