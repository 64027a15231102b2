"""Helpers for the notebook SDK and magic tests: notebook-like code, a real shell (the SDK is reset for
every test by the ``fresh_sdk`` fixture of conftest.py)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any


def notebook_namespace(source: str) -> dict[str, Any]:
    """Run ``source`` as a notebook cell would: in a namespace called ``__main__`` (so its functions are
    pickled by value, as in a kernel), and return that namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), namespace)
    return namespace


@dataclass
class CellResult:
    success: bool
    stdout: str
    stderr: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def svgs(self) -> list[str]:
        return [o["image/svg+xml"] for o in self.outputs if "image/svg+xml" in o]


def new_shell(ipython_dir: str) -> Any:
    """A real IPython ``InteractiveShell`` with the extension loaded (history off, private IPython dir)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config, ipython_dir=ipython_dir)
    assert shell.run_cell("%load_ext kernel_magics").success
    return shell


def close_shell() -> None:
    """Forget the shell, and its exit hook: every shell registers one that resets it and runs a full
    ``gc.collect()`` at interpreter exit, which after the whole suite (hundreds of threads, PyFlink's
    objects) kept pytest from exiting for minutes."""
    import atexit

    from IPython.core.interactiveshell import InteractiveShell

    if InteractiveShell.initialized():
        atexit.unregister(InteractiveShell.instance().atexit_operations)
    InteractiveShell.clear_instance()


def run(shell: Any, cell: str, cell_id: str | None = None) -> CellResult:
    """Run one cell, capturing stdout, stderr and rich display outputs."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        result = shell.run_cell(textwrap.dedent(cell).strip("\n"), store_history=True, cell_id=cell_id)
    return CellResult(result.success, captured.stdout, captured.stderr,
                      [dict(o.data) for o in captured.outputs], result.error_in_exec or result.error_before_exec)
