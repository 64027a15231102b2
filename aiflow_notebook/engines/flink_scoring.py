"""Vectorized scoring: a flink job that reads a dataset, predicts with a model version and writes the scores.

That shape — ``read_dataset → predict(model=...) → write_dataset``, no functions of its own on the read or
the write — is what a serving job is. Run row by row (``flink_program``), each row crosses PyFlink's
Java ⇄ Python boundary on its own and the model sees batches of one. Here the program keeps the same file
source and file sink (same uids, so savepoints and part files are those of the row-by-row program) and
puts one vectorized PyFlink function between them::

    file source (lines) ─ from_data_stream ─ LineScorer (pandas UDF: parse, predict, format) ─ sink

PyFlink hands :class:`LineScorer` up to ``python.fn-execution.arrow.batch.size`` lines at once (Arrow);
it parses them, calls the model once per batch (``Predictor.predict_rows``: ``predict_batch(frame)``
when the model has one, else ``predict(row)`` per row) and returns the formatted output lines (None for
rows the model dropped, filtered out in Java). In a streaming job a batch is handed over at the latest
after ``python.fn-execution.bundle.time`` (set here to ``STREAM_BUNDLE_MS`` unless the job sets it), and
scores are committed on each checkpoint (``flink_program.CHECKPOINT_INTERVAL_MS``).

Not used (the row-by-row program runs instead) for any other shape, and in Flink's ``thread`` execution
mode, which has no vectorized functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pyflink.datastream.data_stream import DataStream
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, StreamTableEnvironment
from pyflink.table.expressions import col
from pyflink.table.udf import ScalarFunction, udf

from aiflow_notebook.engines.flink_program import dataset_lines, set_runtime_mode, write_lines
from aiflow_notebook.engines.model_io import Predictor
from aiflow_notebook.storage.part_files import format_row, parse_line

STREAM_BUNDLE_MS = 100  # streaming: hand a partial batch to the model after this long (latency of a trickle)
BUNDLE_TIME = "python.fn-execution.bundle.time"
VECTORIZED = "vectorized"  # job property: false runs a scoring job row by row (flink_program)


def scoring_chain(job: dict[str, Any], callables: dict[str, Any]) -> tuple | None:
    """(read, predict, write, predictor) when the job is exactly a scoring chain (see the module docstring)
    and its property ``vectorized`` is not false (the way back to the row-by-row program)."""
    nodes = job["nodes"]
    if str((job.get("properties") or {}).get(VECTORIZED, True)).lower() in ("false", "0", "no"):
        return None
    if [node["kind"] for node in nodes] != ["read_dataset", "predict", "write_dataset"]:
        return None
    read, predict, write = nodes
    predictor = callables.get(predict["name"])
    if not isinstance(predictor, Predictor) or callables.get(read["name"]) or callables.get(write["name"]):
        return None
    properties = predict.get("properties") or {}
    if properties.get("flat") or properties.get("group_by") is not None:
        return None
    if [tuple(i) for i in predict.get("inputs") or []] not in ([(read["name"], 0)], [(read["name"], -1)]):
        return None
    if [tuple(i) for i in write.get("inputs") or []] not in ([(predict["name"], 0)], [(predict["name"], -1)]):
        return None
    return read, predict, write, predictor


def build_scoring(env: Any, job_name: str, read: dict[str, Any], predict: dict[str, Any], write: dict[str, Any],
                  predictor: Predictor, *, streaming: bool, base_dir: str | Path) -> list[str] | None:
    """Add the vectorized scoring program to ``env``; the dataset directories it writes (None: the job's
    settings rule it out, build the row-by-row program instead)."""
    set_runtime_mode(env, streaming=streaming)  # before the table environment, which takes it over
    t_env = StreamTableEnvironment.create(env)
    config = t_env.get_config()
    if config.get("python.execution-mode", "process") == "thread":
        return None
    if streaming and not config.get(BUNDLE_TIME, ""):
        config.set(BUNDLE_TIME, str(STREAM_BUNDLE_MS))
    source, target = read.get("dataset") or {}, write.get("dataset") or {}
    lines = dataset_lines(env, read, job_name, streaming=streaming, base_dir=base_dir)
    scorer = udf(LineScorer(predictor, source.get("uri", ""), source.get("schema"), target.get("uri", "")),
                 result_type=DataTypes.STRING(), func_type="pandas")
    scored = t_env.from_data_stream(lines).select(scorer(col("f0")).alias("line")).filter(col("line").is_not_null)
    string = get_gateway().jvm.org.apache.flink.table.api.DataTypes.STRING()
    out = DataStream(t_env._j_tenv.toDataStream(scored._j_table, string))
    batch = config.get("python.fn-execution.arrow.batch.size", "1000")
    print(f"[aiflow] {predict['name']}: scoring in batches of up to {batch} rows (predict_batch when the model "
          "has one, else predict per row)", flush=True)
    return [write_lines(out, write, job_name, streaming=streaming, base_dir=base_dir)]


class LineScorer(ScalarFunction):
    """Pandas UDF: a batch of input lines → the formatted output line of each (None: dropped)."""

    def __init__(self, predictor: Predictor, source_uri: str, schema: Any, target_uri: str) -> None:
        self.predictor = predictor
        self.source_uri, self.schema, self.target_uri = source_uri, schema, target_uri
        self.columns = list(schema) if isinstance(schema, dict) else None

    def open(self, function_context: Any) -> None:
        self.predictor.follow_swaps(function_context.get_index_of_this_subtask() or 0,
                                    function_context.get_number_of_parallel_subtasks() or 1)

    def close(self) -> None:
        self.predictor.stop_following()

    def eval(self, lines: pd.Series) -> pd.Series:
        rows = [parse_line(line, self.source_uri, self.schema) for line in lines]
        outputs = self.predictor.predict_rows(rows, self.columns)
        return pd.Series([None if out is None else format_row(out, self.target_uri) for out in outputs],
                         dtype=object)
