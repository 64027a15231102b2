"""IPython extension: ``%load_ext kernel_magics`` registers ``%%aiflow`` / ``%aiflow`` (DESIGN §4.5).

The magics are thin: they parse a line and call the ``aiflow_notebook`` SDK (see ``magics.py``).
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``aiflow`` magics; loading the extension twice is harmless."""
    import aiflow_notebook
    from kernel_magics.magics import AIFlowMagics

    magics = AIFlowMagics(ipython)
    ipython.register_magics(magics)
    unload_ipython_extension(ipython)  # a reload replaces the old hook
    ipython.events.register("pre_run_cell", magics.remember_cell)
    ipython.user_ns.setdefault("af", aiflow_notebook)  # DESIGN §2's cells use `af` without importing it
    # a WorkflowRun as a cell's result shows the live graph (by name: importing the scheduler waits till used)
    ipython.display_formatter.ipython_display_formatter.for_type_by_name(
        "aiflow_notebook.scheduler.client", "WorkflowRun", _show_run)


def _show_run(run: Any) -> bool:
    """Display a ``WorkflowRun`` as a ``GraphWidget`` following it."""
    from IPython.display import display

    from aiflow_notebook.widgets import GraphWidget

    display(GraphWidget(run))
    return True


def unload_ipython_extension(ipython: Any) -> None:
    """Stop following cell ids (the magic itself stays registered, as IPython has no way to remove it)."""
    for callback in list(ipython.events.callbacks["pre_run_cell"]):
        if type(getattr(callback, "__self__", None)).__name__ == "AIFlowMagics":
            ipython.events.unregister("pre_run_cell", callback)
