"""Every example in docs/dl_on_flink.md runs as documented (dl-on-flink's docs drifted from its code)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiflow_notebook.engines.process import PYFLINK_WORKER_VARIABLES
from aiflow_notebook.testing.processes import wait_no_process_left
from dl_on_flink.testing import CHILD_MODULE

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "dl_on_flink.md"
EXAMPLE = re.compile(r"<!-- dl-example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.S)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def examples() -> dict[str, str]:
    return {m["name"]: m["code"] for m in EXAMPLE.finditer(GUIDE.read_text())}


def run_example(name: str, tmp_path: Path) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(examples()[name])
    # without what PyFlink's loopback worker put into this process's environment (a local job run earlier
    # in this test session): inherited, it makes the example believe it is a UDF worker
    env = {key: value for key, value in os.environ.items() if key not in PYFLINK_WORKER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []
    return done.stdout.strip().splitlines()[-1]


def test_every_example_is_tested():
    assert set(examples()) == {"pytorch-linear-regression", "pytorch-inference", "tensorflow-linear-regression"}


def test_pytorch_ddp_linear_regression_converges(tmp_path):
    last = run_example("pytorch-linear-regression", tmp_path)
    w, b = (float(v) for v in re.fullmatch(r"w=(\S+) b=(\S+)", last).groups())
    assert abs(w - 2) < 0.05 and abs(b - 1) < 0.05, last


def test_tensorflow_multi_worker_linear_regression_converges(tmp_path):
    last = run_example("tensorflow-linear-regression", tmp_path)
    w, b = (float(v) for v in re.fullmatch(r"w=(\S+) b=(\S+)", last).groups())
    assert abs(w - 2) < 0.05 and abs(b - 1) < 0.05, last


def test_pytorch_inference_example(tmp_path):
    assert run_example("pytorch-inference", tmp_path) == str([(i, i + 1) for i in range(10)])
