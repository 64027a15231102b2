"""Every notebook in notebooks/ runs to the end in a real kernel (nbclient), and `make demo`'s runner works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "00_quickstart.ipynb"  # executed by the `make demo` runner test below
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if p != QUICKSTART)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error(path, aiflow_home):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


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
