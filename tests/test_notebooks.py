"""Every notebook in notebooks/ runs to the end in a real kernel (nbclient), and `make demo`'s runner works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


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
    assert "registered ctr v2" in out
    assert "deployed ctr v2" in out
    assert "event MODEL_DEPLOYED" in out
    assert "refused, as it should be: model 'ctr' version 2 cannot go from DEPLOYED to GENERATED" in out
    assert "[graph: SVG" in out
    assert "quickstart finished" in out
