"""A clean notebook SDK for each test, as after a kernel restart."""

from __future__ import annotations


def reset_sdk() -> None:
    """Stop every notebook panel's bus follower, forget every workflow and open block, stop the embedded
    scheduler (and its jobs) that ``af.submit`` started in this process, and go back from ``af.connect`` to
    the embedded scheduler."""
    import sys

    import aiflow_notebook.sdk.graph as _graph
    import aiflow_notebook.session.submit as submission

    follow = sys.modules.get("aiflow_notebook.widgets.follow")
    if follow is not None:  # panels opened by the test stop following the bus that is about to stop
        follow.stop_all()
    _graph.clear_session()
    submission._shutdown()
    submission.disconnect()
    if "aiflow_notebook.events.session" in sys.modules:  # also forget disconnect()'s override of the environment
        sys.modules["aiflow_notebook.events.session"].reset()
    submission._session_runs.clear()
