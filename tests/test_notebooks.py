"""Every notebook in notebooks/ runs to the end in a real kernel (nbclient), and `make demo`'s runner works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aiflow_notebook.testing.processes import wait_no_process_left

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "00_quickstart.ipynb"  # executed by the `make demo` runner test below
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


@pytest.mark.slow
def test_quickstart_runner_prints_what_happened():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "run_quickstart.py")], capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "jobs: {'prep': 'FINISHED', 'train': 'FINISHED', 'serve': 'RUNNING'}" in out
    assert "model ctr v1 (GENERATED) registered by the train job" in out
    assert "alice,0,median-v1" in out and "bob,1,median-v1" in out  # threshold: median activity 50
    assert "carol,1,strict-v2" in out
    assert "serve went through: ['STARTING', 'RUNNING', 'KILLED', 'STARTING', 'RUNNING']" in out
    assert "ctr v2: VALIDATED" in out
    assert "[graph: SVG" in out
    assert "run KILLED" in out
    assert "quickstart finished: 14 cells" in out
