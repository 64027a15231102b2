"""Code capture: a compiled job's payload runs its nodes in a fresh `python` process, helpers and imports from
other notebook cells included (the ZenML notebook limit does not apply)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sdk_support import notebook_namespace, run

import aiflow_notebook as af
from aiflow_notebook.sdk import capture

REPO = Path(__file__).resolve().parents[1]


def run_in_fresh_python(code: str, cwd: Path) -> str:
    """Run ``code`` in a new interpreter whose only extra path is this repository (for aiflow_notebook)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_payload_runs_in_a_fresh_process_with_helpers_and_imports_from_other_cells(shell, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "clicks.csv").write_text("1,2,0\n3,5,1\n")
    cells = [
        "import statistics",  # an import made in one cell...
        "SCALE = 10\n\ndef scale(values):\n    return [v * SCALE for v in values]",  # ...a helper in another
        "def featurize(rows):\n    numbers = [[float(v) for v in row] for row in rows]\n"
        "    return [scale(row) + [statistics.mean(row)] for row in numbers]",
        f"%%aiflow job prep --engine python\n"
        f"raw = af.read_dataset('clicks', uri='file://{data / 'clicks.csv'}')\n"
        f"feats = af.transform(raw, featurize, name='featurize')\n"
        f"af.write_dataset(feats, 'features', uri='{data / 'features.json'}')",
        f"open({str(tmp_path / 'prep.payload')!r}, 'wb').write(af.compile().jobs['prep'].payload)",
    ]
    for cell in cells:
        result = run(shell, cell)
        assert result.success, (cell, result.stderr, result.error)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    out = run_in_fresh_python(f"""
        import json
        from aiflow_notebook.sdk.job_runtime import run_job_payload
        results = run_job_payload(open({str(tmp_path / 'prep.payload')!r}, 'rb').read())
        print(json.dumps(results["featurize"]))
    """, elsewhere)
    expected = [[10.0, 20.0, 0.0, 1.0], [30.0, 50.0, 10.0, 3.0]]
    assert json.loads(out) == expected
    assert json.loads((data / "features.json").read_text()) == expected

    # cloudpickle alone is enough to load the functions and call them
    out = run_in_fresh_python(f"""
        import cloudpickle
        payload = cloudpickle.loads(open({str(tmp_path / 'prep.payload')!r}, 'rb').read())
        print(payload["job"], [n["name"] for n in payload["nodes"]], payload["callables"]["featurize"]([["2", "4"]]))
    """, elsewhere)
    assert out.strip() == "prep ['read_clicks', 'featurize', 'write_features'] [[20.0, 40.0, 3.0]]"


@pytest.mark.slow
def test_functions_from_a_local_module_are_pickled_by_value(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mylib_for_capture.py").write_text("OFFSET = 5\n\ndef shift(x):\n    return x + OFFSET\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    try:
        ns = notebook_namespace("""
            import mylib_for_capture
            import aiflow_notebook as af

            def step(values):
                return [mylib_for_capture.shift(v) for v in values]

            with af.workflow("w"), af.job_config("j"):
                af.transform(af.read_dataset("d", fn=lambda dataset: [1, 2]), step, name="step")
        """)
        assert ns["step"]([1]) == [6]
        payload = af.compile("w").jobs["j"].payload
    finally:
        sys.modules.pop("mylib_for_capture", None)
    (tmp_path / "j.payload").write_bytes(payload)
    out = run_in_fresh_python(f"""
        from aiflow_notebook.sdk.job_runtime import run_job_payload
        print(run_job_payload(open({str(tmp_path / 'j.payload')!r}, 'rb').read())["step"])
    """, tmp_path)
    assert out.strip() == "[6, 7]"


def test_fingerprint_ignores_where_code_lives_but_not_what_it_does():
    first = notebook_namespace("def f(x):\n    return {x} | {'a', 'b'}\n")["f"]
    again = notebook_namespace("\n\n\ndef f(x):\n    return {x} | {'a', 'b'}\n")["f"]  # other lines
    other = notebook_namespace("def f(x):\n    return {x} | {'a', 'c'}\n")["f"]
    assert capture.fingerprint({"n": first}) == capture.fingerprint({"n": again})
    assert capture.fingerprint({"n": first}) != capture.fingerprint({"n": other})
    assert capture.fingerprint({"n": first}) != capture.fingerprint({"m": first})


def test_load_payload_refuses_other_pickles():
    import cloudpickle

    with pytest.raises(af.CaptureError, match="not a job payload"):
        capture.load_payload(cloudpickle.dumps({"something": "else"}))
