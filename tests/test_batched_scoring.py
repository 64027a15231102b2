"""Batched inference (issue 20, part 2): ``af.predict`` hands a model with ``predict_batch`` whole batches.

Unit tests of ``Predictor.predict_rows`` (the one place a model is called with a batch), and a real Flink
batch job of the scoring shape (read_dataset → predict → write_dataset) that runs as the vectorized program
of ``engines.flink_scoring``: the model sees batches, every row is scored exactly once, and the output
lines are those the row-by-row program writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.model_io import ModelOutputError, Predictor, save_model
from aiflow_notebook.scheduler import EmbeddedScheduler
from aiflow_notebook.storage.part_files import read_lines

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Doubler:
    """predict(row) → [id, 2x]; predict_batch(frame) the same for a batch, noting each batch's size."""

    def __init__(self, log: str | None = None) -> None:
        self.log = log

    def predict(self, row):
        return [row[0], row[1] * 2]

    def predict_batch(self, frame: pd.DataFrame):
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{len(frame)}\n")
        out = pd.DataFrame({"id": frame["id"], "y": frame["x"] * 2})
        out.loc[frame["id"] % 10 == 9, "y"] = None
        return [None if pd.isna(y) else [i, y] for i, y in zip(out["id"].tolist(), out["y"].tolist(), strict=True)]


class RowsOnly:
    def predict(self, row):
        return row[0] + 1


def predictor(model, tmp_path, with_version=False) -> Predictor:
    return Predictor("m", 3, uri=save_model(model, "m", home=tmp_path), with_version=with_version)


def test_a_batch_method_is_called_once_with_named_columns_and_may_drop_rows(tmp_path):
    log = tmp_path / "sizes"
    rows = [[k, k / 2] for k in range(20)]
    out = predictor(Doubler(str(log)), tmp_path, with_version=True).predict_rows(rows, ["id", "x"])
    assert log.read_text().split() == ["20"]
    assert out[:2] == [[0, 0.0, 3], [1, 1.0, 3]] and out[9] is None and out[19] is None
    assert sum(o is not None for o in out) == 18


def test_a_model_without_a_batch_method_is_called_per_row(tmp_path):
    assert predictor(RowsOnly(), tmp_path).predict_rows([[1], [5]]) == [2, 6]
    assert predictor(RowsOnly(), tmp_path).predict_rows([]) == []


class Short:
    def predict(self, row):
        return row

    def predict_batch(self, frame):
        return frame.iloc[:-1]


def test_a_batch_method_that_loses_rows_is_an_error_naming_the_model(tmp_path):
    with pytest.raises(ModelOutputError, match="model m version 3: predict_batch returned 1 rows for 2"):
        predictor(Short(), tmp_path).predict_rows([[1, 2], [3, 4]], ["a", "b"])


def test_a_torch_module_scores_a_batch_as_it_scores_each_row(tmp_path):
    import torch

    from aiflow_notebook.engines.model_io import TorchModel

    torch.manual_seed(0)
    model = TorchModel(torch.nn.Linear(2, 1))
    rows = [[k, k / 3] for k in range(50)]
    batch = model.predict_batch(pd.DataFrame(rows, columns=["a", "b"]))
    assert [r[:2] for r in batch] == rows and all(isinstance(r[0], int) for r in batch)
    assert [r[2] for r in batch] == pytest.approx([model.predict(r)[2] for r in rows], rel=1e-5)


@pytest.mark.slow
def test_a_flink_scoring_job_hands_the_model_batches_and_scores_each_row_once(tmp_path, aiflow_home):
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("".join(f"{k},{k / 4}\n" for k in range(3000)))
    log = tmp_path / "sizes"
    with EmbeddedScheduler() as scheduler:
        uri = save_model(Doubler(str(log)), "doubler")
        scheduler.store.register_model("doubler")
        scheduler.store.register_model_version("doubler", uri=uri)
        with af.workflow("scoring"):
            with af.job_config("score", engine="flink", parallelism=2,
                               properties={"flink.python.fn-execution.arrow.batch.size": "500"}):
                rows = af.read_dataset("rows", uri=str(data / "rows.csv"), schema={"id": "int", "x": "float"})
                af.write_dataset(af.predict(rows, model="doubler", with_version=True), "scores",
                                 uri=str(data / "scores"))
        run = scheduler.submit(af.compile("scoring"))
        state = run.wait(timeout=300)
        (job_run,) = [json.loads(e.context)["job_run"] for e in run.job_events() if e.value == "STARTING"]
        log_text = Path(scheduler.store.get_job_run(job_run).log_uri.removeprefix("file://")).read_text()
        assert state == "FINISHED", log_text
        lines = read_lines(data / "scores")
    want = [f"{k},{k / 4 * 2},1" for k in range(3000) if k % 10 != 9]
    assert sorted(lines) == sorted(want)  # every row once; the dropped ones not at all
    sizes = [int(s) for s in log.read_text().split()]
    assert sum(sizes) == 3000 and max(sizes) > 1 and max(sizes) <= 500
    assert "scoring in batches of up to 500 rows" in log_text
