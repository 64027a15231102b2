"""The JupyterLab extension as shipped: built by the set-up, found by JupyterLab, its Jest specs green."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiflow_notebook.core.vocabulary import (
    DEFAULT_NAMESPACE,
    DEFAULT_PROJECT,
    FINAL_STATES,
    JOB_STATUS_CHANGED,
    MODEL_EVENT_PREFIX,
    MODEL_SWAPPED,
    RUN_STATUS_CHANGED,
    JobState,
    RunState,
    Stage,
)
from aiflow_notebook.meta.models import ALLOWED_TRANSITIONS

REPO = Path(__file__).resolve().parents[1]
LABEXT = REPO / "labextension"
BUILT = REPO / "aiflow_notebook" / "labextension"
JUPYTER = Path(sys.executable).parent / "jupyter"
SOURCES = LABEXT / "src"
VOCABULARY_START = "// --- vocabulary:"
VOCABULARY_END = "// --- end of the vocabulary"


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


# --- the TypeScript copy of the vocabulary (the block at the top of labextension/src/model.ts) ---------------

def _model_ts() -> tuple[str, str]:
    """model.ts split into its vocabulary block and the rest."""
    text = (SOURCES / "model.ts").read_text()
    head, found, tail = text.partition(VOCABULARY_START)
    block, found_end, rest = tail.partition(VOCABULARY_END)
    assert found and found_end, f"model.ts has no block between {VOCABULARY_START!r} and {VOCABULARY_END!r}"
    return block, head + rest


def _ts_constants(block: str) -> dict[str, object]:
    """The block's `export const NAME = ...;` as Python values (string literals, `{KEY: ...}`, `[...]`, and
    references `Name.MEMBER` to constants above)."""
    constants: dict[str, object] = {}
    for name, expr in re.findall(r"^export const (\w+)(?::[^=]+)? = (.*?);$", block, re.M | re.S):
        expr = re.sub(r"\s+as const$", "", expr.strip())
        expr = re.sub(r"\b([A-Za-z]\w*)\.([A-Z_]+)\b", lambda m: repr(constants[m[1]][m[2]]), expr)
        expr = re.sub(r"([{,]\s*)\[('[A-Z_]+')\]\s*:", r"\1\2:", expr)  # computed keys [Stage.X]:
        expr = re.sub(r"([{,]\s*)([A-Z_]+)\s*:", r"\1'\2':", expr)  # bare keys X:
        constants[name] = ast.literal_eval(expr)
    return constants


def test_the_typescript_vocabulary_is_the_python_one():
    """model.ts writes the words of core/vocabulary.py and meta/models.py once; both sides must agree."""
    ts = _ts_constants(_model_ts()[0])
    assert list(ts["JobState"].items()) == [(s.name, s.value) for s in JobState]
    assert list(ts["RunState"].items()) == [(s.name, s.value) for s in RunState]
    assert ts["FINAL_STATES"] == [s.value for s in FINAL_STATES]
    assert ts["JOB_STATUS_CHANGED"] == JOB_STATUS_CHANGED
    assert ts["RUN_STATUS_CHANGED"] == RUN_STATUS_CHANGED
    assert ts["MODEL_EVENT_PREFIX"] == MODEL_EVENT_PREFIX
    assert ts["MODEL_SWAPPED"] == MODEL_SWAPPED
    assert ts["DEFAULT_NAMESPACE"] == DEFAULT_NAMESPACE
    assert ts["DEFAULT_PROJECT"] == DEFAULT_PROJECT
    assert list(ts["Stage"].items()) == [(s.name, s.value) for s in Stage]
    # The sidebar offers every allowed next stage except DELETED, in the stages' order.
    offered = {stage.value: [s.value for s in Stage if s in ALLOWED_TRANSITIONS[stage] and s != Stage.DELETED]
               for stage in Stage}
    assert ts["NEXT_STAGES"] == offered


def test_no_other_typescript_file_spells_a_state_or_an_event_type():
    """Outside the vocabulary block (specs aside) the sources name JobState.RUNNING, never 'RUNNING'."""
    words = {*JobState, *RunState, *Stage, JOB_STATUS_CHANGED, RUN_STATUS_CHANGED}
    alternatives = "|".join(sorted(words))
    literal = re.compile(rf"""(['"`])(?:{alternatives})\1|['"`]{MODEL_EVENT_PREFIX}""")
    rest = {"model.ts": _model_ts()[1]}
    rest |= {p.name: p.read_text() for p in SOURCES.glob("*.ts") if p.name != "model.ts"}
    found = {name: [m[0] for m in literal.finditer(text)] for name, text in rest.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert len(rest) > 5  # the glob saw the sources
