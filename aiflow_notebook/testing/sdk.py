"""A clean notebook SDK for each test, as after a kernel restart."""

from __future__ import annotations


def reset_sdk() -> None:
    """Forget every workflow and open block, stop the embedded scheduler (and its jobs) that ``af.submit``
    started in this process, and go back from ``af.connect`` to the embedded scheduler."""
    import aiflow_notebook.graph as _graph
    import aiflow_notebook.submission as submission

    _graph.clear_session()
    submission._shutdown()
    submission.disconnect()
