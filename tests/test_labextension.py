"""The JupyterLab extension as shipped: built by the set-up, found by JupyterLab, its Jest specs green."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LABEXT = REPO / "labextension"
BUILT = REPO / "aiflow_notebook" / "labextension"
JUPYTER = Path(sys.executable).parent / "jupyter"


def test_jupyterlab_lists_the_extension_enabled_and_ok():
    out = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True, text=True, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert re.search(r"aiflow-notebook v\S+ enabled OK", text), text


def test_the_build_carries_both_entry_points_and_the_mime_type():
    meta = json.loads((BUILT / "package.json").read_text())
    build = meta["jupyterlab"]["_build"]
    assert build["extension"] == "./extension" and build["mimeExtension"] == "./mimeExtension", build
    bundle = "".join(p.read_text(errors="replace") for p in (BUILT / "static").glob("*.js"))
    assert "application/vnd.aiflow.workflow+json" in bundle
    assert "aiflow-sidebar" in bundle


@pytest.mark.slow
def test_jest_specs_of_the_reducer_and_the_graph_model_pass():
    npm = shutil.which("npm")
    assert npm, "npm is missing: run scripts/setup.sh (it installs Node and builds the extension)"
    out = subprocess.run([npm, "test", "--silent", "--", "--ci"], cwd=LABEXT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert re.search(r"Tests:\s+\d+ passed", out.stderr + out.stdout), out.stderr[-2000:]


@pytest.mark.slow
def test_the_wheel_carries_the_prebuilt_extension_and_the_server_config(tmp_path):
    """What `pip install aiflow-notebook` puts where JupyterLab looks (no Node needed to use it)."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    data = "aiflow_notebook-0.1.0.data/data/"
    assert f"{data}share/jupyter/labextensions/aiflow-notebook/package.json" in names
    assert any(n.startswith(f"{data}share/jupyter/labextensions/aiflow-notebook/static/remoteEntry.") for n in names)
    assert f"{data}etc/jupyter/jupyter_server_config.d/aiflow_notebook.json" in names
