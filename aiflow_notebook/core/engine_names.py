"""The engine names a job may ask for, so a typo is caught when the workflow is compiled.

Only the names live here, not the runners: the graph must not import the engines (DESIGN §3). The
runner registry (``aiflow_notebook.engines.register_engine``) calls :func:`register_engine_name` when an
engine is plugged in, which makes the name valid here too.
"""

from __future__ import annotations

BUILTIN_ENGINES = ("python", "bash", "flink", "pytorch", "tensorflow")

_known: dict[str, None] = dict.fromkeys(BUILTIN_ENGINES)  # a dict keeps the order names were added in


def register_engine_name(name: str) -> None:
    """Accept ``name`` as an engine from now on (idempotent)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an engine name must be a non-empty string, got {name!r}")
    _known[name] = None


def known_engines() -> tuple[str, ...]:
    """Every engine name a job may use, built-in ones first."""
    return tuple(_known)


def is_known_engine(name: str) -> bool:
    return name in _known
