"""The flink engine's program builder on the real local mini-cluster (PyFlink)."""

from __future__ import annotations

import sys

import pytest

from aiflow_notebook.engines.flink_program import FlinkProgramError, build_program, format_row, parse_line
from aiflow_notebook.storage.part_files import read_lines


def test_rows_round_trip_through_csv_lines_with_commas_and_quotes():
    row = ["a,b", 'say "hi"', "3"]
    assert parse_line(format_row(row, "x.csv"), "x.csv", None) == row
    assert parse_line("1,2.5,x", "x.csv", {"a": "int", "b": "double", "c": "str"}) == [1, 2.5, "x"]
    assert parse_line(format_row({"k": [1, 2]}, "x.jsonl"), "x.jsonl", None) == {"k": [1, 2]}


def _env():
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(2)
    return env


@pytest.mark.slow
def test_a_bounded_job_reads_transforms_and_writes_a_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clicks.csv").write_text('u1,3\nu2,5\n"u,3",7\n')
    nodes = [
        {"kind": "read_dataset", "name": "raw", "inputs": [],
         "dataset": {"name": "clicks", "uri": "data/clicks.csv", "schema": {"user": "str", "n": "int"}}},
        {"kind": "transform", "name": "featurize", "inputs": [["raw", 0]]},
        {"kind": "write_dataset", "name": "out", "inputs": [["featurize", 0]],
         "dataset": {"name": "features", "uri": "data/features.csv"}},
    ]
    env = _env()
    written = build_program(env, "prep", nodes, {"featurize": lambda row: None if row[1] == 5 else [row[0], row[1] * 10]},
                            streaming=False, base_dir=tmp_path)
    env.execute("prep")
    assert written == [str(tmp_path / "data" / "features.csv")]
    assert sorted(read_lines(tmp_path / "data" / "features.csv")) == ['"u,3",70', "u1,30"]


def test_programs_that_cannot_run_on_flink_name_the_node(tmp_path):
    env = _env()
    read = {"kind": "read_dataset", "name": "raw", "inputs": [], "dataset": {"name": "d", "uri": "missing.csv"}}
    with pytest.raises(FlinkProgramError, match="node 'raw': dataset 'd' has no data at .*missing.csv"):
        build_program(env, "prep", [read], {}, streaming=False, base_dir=tmp_path)
    (tmp_path / "in.csv").write_text("x\n")
    read["dataset"]["uri"] = "in.csv"
    no_fn = {"kind": "transform", "name": "t", "inputs": [["raw", 0]]}
    with pytest.raises(FlinkProgramError, match="node 't' \\(transform\\) has no function"):
        build_program(env, "prep", [read, no_fn], {}, streaming=False, base_dir=tmp_path)
    with pytest.raises(FlinkProgramError, match="job 'prep' writes no dataset"):
        build_program(env, "prep", [read], {}, streaming=False, base_dir=tmp_path)
