"""Module paths from before the round-3 layout keep working for one release, with a DeprecationWarning.

``tests/data/pre_move_workflow.json`` was compiled and saved by the code before the move (commit 4fcfa97,
``tests/data/make_pre_move_workflow.py``): its custom condition and its node function were pickled by
value, and they name our modules by their old paths (``aiflow_notebook.conditions.Condition``,
``aiflow_notebook.graph_errors.InvalidArgumentError``). Each check runs in a fresh interpreter, where the
old paths have not been imported yet, so the warnings are seen and nothing of this test process leaks in.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiflow_notebook._moved import MOVED

SAVED = Path(__file__).parent / "data" / "pre_move_workflow.json"


def _run(code: str, cwd: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_saved_workflow_names_the_old_paths():
    """The fixture is what the test says it is: pickles that name the modules by their old paths."""
    saved = json.loads(SAVED.read_text())
    custom = next(edge["condition"] for edge in saved["control_edges"] if edge["condition"]["mode"] == "CUSTOM")
    assert b"aiflow_notebook.conditions" in base64.b64decode(custom["payload"])
    assert b"aiflow_notebook.graph_errors" in base64.b64decode(saved["jobs"][0]["payload"])


def test_a_workflow_saved_before_the_move_loads_runs_and_keeps_its_hash(tmp_path):
    (tmp_path / "numbers.csv").write_text("1,2\n3,4\n")
    out = _run(f"""
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import aiflow_notebook as af
            from aiflow_notebook.sdk.conditions import ConditionContext, load_condition
            from aiflow_notebook.sdk.job_runtime import LocalContext
            from aiflow_notebook.sdk.workflow import Workflow

            data = open({str(SAVED)!r}, "rb").read()
            workflow = Workflow.from_bytes(data)
            prep = workflow.jobs["prep"].run(LocalContext())
            edge = next(e for e in workflow.control_edges if e.condition.mode == "CUSTOM")
            condition = load_condition(edge.condition.to_dict())
            states = {{}}
            met = [condition.is_met(None, ConditionContext(states)) for _ in range(6)]
            try:
                workflow.jobs["prep"].run(LocalContext(datasets={{"numbers": []}}))
                empty = "no error"
            except Exception as exc:  # the pickled function raises an error class it names by its old path
                empty = type(exc).__module__ + "." + type(exc).__name__
        print(json.dumps({{
            "hash": workflow.content_hash, "stored": json.loads(data)["content_hash"],
            "prep": prep["total"], "written": json.load(open("sums.json")),
            "is_condition": isinstance(condition, af.Condition), "met": met, "states": states,
            "empty": empty,
            "warnings": sorted({{str(w.message).split(" moved")[0] for w in caught
                               if issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message)}}),
        }}))
    """, tmp_path)
    assert out["hash"] == out["stored"]
    assert out["prep"] == {"job": "prep", "sum": 10}
    assert out["written"] == {"job": "prep", "sum": 10}
    assert out["is_condition"] is True
    assert out["met"] == [False, False, True, False, False, True]
    assert out["states"] == {"count": 6}
    assert out["empty"] == "aiflow_notebook.core.errors.InvalidArgumentError"  # raised by the pickled function
    assert out["warnings"] == ["aiflow_notebook.conditions", "aiflow_notebook.graph_errors"]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_imports_with_a_warning_and_gives_the_new_objects(old, tmp_path):
    new = MOVED[old]
    targets = [new] if isinstance(new, str) else list(new)
    out = _run(f"""
        import importlib, json, warnings
        import aiflow_notebook
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            moved = importlib.import_module({old!r})
        targets = [importlib.import_module(name) for name in {targets!r}]
        public = [name for target in targets for name in vars(target) if not name.startswith("_")]
        print(json.dumps({{
            "same": all(getattr(moved, name) is next(getattr(t, name) for t in targets if hasattr(t, name))
                        for name in public),
            "names": len(public),
            "warned": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)],
        }}))
    """, tmp_path)
    assert out["same"] and out["names"] > 0
    assert len(out["warned"]) == 1 and out["warned"][0].startswith(f"{old} moved to {targets[0]}"), out["warned"]


def test_new_code_imports_no_old_path():
    """Importing every module of ours by its new path never goes through an old one (no warning)."""
    root = Path(__file__).resolve().parent.parent
    modules = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                     for package in ("aiflow_notebook", "kernel_magics", "dl_on_flink")
                     for p in (root / package).rglob("*.py")
                     if "migrations" not in p.parts and p.name != "__main__.py")
    probe = ("import importlib, sys, warnings\n"
             "warnings.filterwarnings('error', message=r'aiflow_notebook\\.\\S+ moved to', category=DeprecationWarning)\n"
             "for module in sys.argv[1:]:\n    importlib.import_module(module)")
    result = subprocess.run([sys.executable, "-c", probe, *modules], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
