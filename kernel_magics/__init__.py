"""IPython extension: ``%load_ext kernel_magics`` registers ``%%aiflow`` / ``%aiflow`` (DESIGN §4.5).

The magics are thin: they parse a line and call the ``aiflow_notebook`` SDK (see ``magics.py``).
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``aiflow`` magics; loading the extension twice is harmless."""
    from kernel_magics.magics import AIFlowMagics

    magics = AIFlowMagics(ipython)
    ipython.register_magics(magics)
    for callback in list(ipython.events.callbacks["pre_run_cell"]):  # a reload replaces the old hook
        if getattr(callback, "__self__", None).__class__ is AIFlowMagics:
            ipython.events.unregister("pre_run_cell", callback)
    ipython.events.register("pre_run_cell", magics.remember_cell)
    ipython.user_ns.setdefault("af", __import__("aiflow_notebook"))


def unload_ipython_extension(ipython: Any) -> None:
    for callback in list(ipython.events.callbacks["pre_run_cell"]):
        if getattr(callback, "__self__", None).__class__.__name__ == "AIFlowMagics":
            ipython.events.unregister("pre_run_cell", callback)
