"""Every notebook in notebooks/ runs to the end in a real kernel (nbclient).

The quickstart (00_quickstart.ipynb) is executed by `make demo`'s runner in tests/test_quickstart_story.py,
twice, with its outcomes asserted from the store and the event log; it is not run a third time here."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aiflow_notebook.testing.processes import wait_no_process_left

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "00_quickstart.ipynb"  # executed by tests/test_quickstart_story.py
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if p != QUICKSTART)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error(path, aiflow_home, monkeypatch):
    monkeypatch.setenv("AIFLOW_DEMO_STOP_AT_END", "1")  # a notebook that leaves a run live for a person stops it
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert wait_no_process_left(home=aiflow_home) == [], "the kernel's jobs must end with the kernel"


@pytest.mark.slow
def test_a_kernel_shut_down_with_a_streaming_job_and_panels_open_takes_its_jobs_along(aiflow_home):
    """The live-panels notebook leaves its streaming job RUNNING for a person to play with; shutting the
    kernel down (as JupyterLab and nbclient do: a shutdown request, a kill after 5 s) must end it."""
    nb = nbformat.read(REPO / "notebooks" / "03_live_panels.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert wait_no_process_left(home=aiflow_home) == []
