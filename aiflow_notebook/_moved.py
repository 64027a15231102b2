"""Module paths from before the round-3 layout (one folder per layer), kept for one release.

Workflows saved before the move name our modules inside their pickles (a custom condition's base class,
an error class a node function raises), and users' notebooks import them. Each old path below answers
with its new module, after a ``DeprecationWarning`` that names the new path. One line per path, in one
table instead of a shim file per path: the package root keeps to a handful of modules (docs/architecture.md).
Delete this module, and its line in ``aiflow_notebook/__init__.py``, in the release after 0.2.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings

MOVED: dict[str, str | tuple[str, ...]] = {  # old path: its new module (or modules, searched in order)
    "aiflow_notebook.blobs": "aiflow_notebook.storage.blobs",
    "aiflow_notebook.capture": "aiflow_notebook.sdk.capture",
    "aiflow_notebook.compile": "aiflow_notebook.sdk.compile",
    "aiflow_notebook.conditions": "aiflow_notebook.sdk.conditions",
    "aiflow_notebook.config": "aiflow_notebook.core.config",
    "aiflow_notebook.console": "aiflow_notebook.cli.console",
    "aiflow_notebook.control": ("aiflow_notebook.sdk.control", "aiflow_notebook.sdk.conditions"),
    "aiflow_notebook.database": "aiflow_notebook.storage.database",
    "aiflow_notebook.datasets": "aiflow_notebook.storage.part_files",
    "aiflow_notebook.demo_cluster": "aiflow_notebook.cli.demo",
    "aiflow_notebook.doctor": "aiflow_notebook.cli.doctor",
    "aiflow_notebook.engine_names": "aiflow_notebook.core.engine_names",
    "aiflow_notebook.errors": "aiflow_notebook.core.errors",
    "aiflow_notebook.events.cli": "aiflow_notebook.cli.events",
    "aiflow_notebook.events.connection": "aiflow_notebook.events.session",
    "aiflow_notebook.flink_cluster": "aiflow_notebook.sandbox.flink_cluster",
    "aiflow_notebook.graph": "aiflow_notebook.sdk.graph",
    "aiflow_notebook.graph_errors": "aiflow_notebook.core.errors",
    "aiflow_notebook.job_runtime": "aiflow_notebook.sdk.job_runtime",
    "aiflow_notebook.meta.cli": "aiflow_notebook.cli.models",
    "aiflow_notebook.meta.db": "aiflow_notebook.storage.database",
    "aiflow_notebook.model_center_api": "aiflow_notebook.session.models",
    "aiflow_notebook.ops": "aiflow_notebook.sdk.ops",
    "aiflow_notebook.postgres_server": "aiflow_notebook.sandbox.postgres",
    "aiflow_notebook.rendering": "aiflow_notebook.core.rendering",
    "aiflow_notebook.schedule_api": "aiflow_notebook.session.schedules",
    "aiflow_notebook.schedule_cli": "aiflow_notebook.cli.schedule",
    "aiflow_notebook.server": "aiflow_notebook.cli.server",
    "aiflow_notebook.stop_signal": "aiflow_notebook.core.stop_signal",
    "aiflow_notebook.submission": "aiflow_notebook.session.submit",
    "aiflow_notebook.testing.flink_output": "aiflow_notebook.storage.part_files",
    "aiflow_notebook.testing.flink_cluster": "aiflow_notebook.sandbox.flink_cluster",
    "aiflow_notebook.testing.ports": "aiflow_notebook.core.ports",
    "aiflow_notebook.testing.postgres": "aiflow_notebook.sandbox.postgres",
    "aiflow_notebook.timing": "aiflow_notebook.core.timing",
    "aiflow_notebook.vocabulary": "aiflow_notebook.core.vocabulary",
    "aiflow_notebook.workflow": "aiflow_notebook.sdk.workflow",
    "aiflow_notebook.workflow_drawing": "aiflow_notebook.sdk.drawing",
    "aiflow_notebook.workflow_mime": "aiflow_notebook.sdk.mime",
}


class MovedModule(types.ModuleType):
    """An old path: every name of its new modules, read through (private names too, for old pickles)."""

    def __init__(self, name: str, targets: list[types.ModuleType]):
        super().__init__(name, targets[0].__doc__)
        self.__dict__["_targets"] = targets

    def __getattr__(self, name: str):
        for target in self.__dict__["_targets"]:
            if hasattr(target, name):
                return getattr(target, name)
        raise AttributeError(f"module {self.__name__!r} (moved) has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for target in self.__dict__["_targets"] for name in dir(target)})


class _MovedFinder:
    """A meta path finder and loader (the protocol only: importlib.abc would import ~7 ms of modules into
    every job process)."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED[spec.name]
        names = (new,) if isinstance(new, str) else new
        warnings.warn(f"{spec.name} moved to {' and '.join(names)}; the old path works until the release after 0.2",
                      DeprecationWarning, stacklevel=2)  # the importer's line (warnings skips importlib's frames)
        return MovedModule(spec.name, [importlib.import_module(name) for name in names])

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Answer the old paths in this process (idempotent; the package root calls it)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
