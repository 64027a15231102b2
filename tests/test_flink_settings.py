"""Job properties named ``flink.<option>`` are Flink settings for the job (engines/flink_environment.flink_settings).

End to end: ``flink.python.execution-mode=thread`` runs a batch job's Python functions (a map and a
group_by) inside Flink's JVM — each row says which process ran it — with the same output as the default
process mode, where they run in a Python worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import psutil
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.flink_environment import flink_settings
from aiflow_notebook.storage.part_files import read_lines

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where(row):
    import psutil

    return [row[0], row[1], psutil.Process().name()]  # the process that runs this function


def count(rows):
    return [[rows[0][1], len(rows), rows[0][2]]]


def _run(tmp_path: Path, name: str, properties: dict, platform: str = "local") -> list[list[str]]:
    with af.workflow(name):
        with af.job_config("prep", engine="flink", parallelism=2, properties=properties, platform=platform):
            rows = af.read_dataset("in", uri=str(tmp_path / "in"), schema={"id": "int", "user": "int"})
            counted = af.transform(af.transform(rows, where, name="where"), count, name="count", group_by=1)
            af.write_dataset(counted, "out", uri=str(tmp_path / name))
    assert af.submit(name).wait(timeout=300) == "FINISHED"
    return sorted(line.split(",") for line in sorted(read_lines(tmp_path / name)))


@pytest.mark.slow
def test_thread_mode_runs_the_python_functions_in_the_jvm_with_the_same_output(tmp_path, aiflow_home):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_text("".join(f"{i},{i % 7}\n" for i in range(700)))
    default = _run(tmp_path, "process_mode", {})
    thread = _run(tmp_path, "thread_mode", {"flink.python.execution-mode": "thread"})
    assert [row[:2] for row in thread] == [row[:2] for row in default] == [[str(u), "100"] for u in range(7)]
    assert {row[2] for row in default} != {"java"}  # a Python worker
    assert {row[2] for row in thread} == {"java"}  # Flink's JVM, with Python embedded


@pytest.mark.slow
def test_thread_mode_on_a_standalone_cluster(tmp_path, aiflow_home, flink_cluster):
    """The TaskManagers' JVMs embed the interpreter too: the setting travels with the job. Twice: the second
    job in the same TaskManagers once failed to load PEMJA again (see flink_cluster)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_text("".join(f"{i},{i % 7}\n" for i in range(700)))
    for attempt in (1, 2):
        thread = _run(tmp_path, f"thread_mode_cluster{attempt}", {"flink.python.execution-mode": "thread"},
                      platform=f"flink://{flink_cluster.address}")
        assert [row[:2] for row in thread] == [[str(u), "100"] for u in range(7)]
        assert {row[2] for row in thread} == {"java"}


def test_flink_properties_become_settings_and_thread_mode_gets_this_import_path():
    assert flink_settings(None) == {}
    assert flink_settings({"workers": 2, "flink.pipeline.object-reuse": True}) == {"pipeline.object-reuse": "True"}
    settings = flink_settings({"flink.python.execution-mode": "thread"})
    paths = settings["python.pythonpath"].split(os.pathsep)
    assert str(Path(af.__file__).resolve().parents[1]) in paths  # the package, even as an editable install
    assert any(Path(p).samefile(psutil.__file__.rsplit("/psutil/", 1)[0]) for p in paths)  # this virtualenv's packages
    own = flink_settings({"flink.python.execution-mode": "thread", "flink.python.pythonpath": "/x"})
    assert own["python.pythonpath"] == "/x"
