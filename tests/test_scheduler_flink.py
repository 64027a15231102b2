"""The DESIGN §2 scenario on real Flink: batch prep, python training, a streaming serving job restarted by a
validated model version; and the same prep job on a standalone Flink cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.model_io import save_model
from aiflow_notebook.meta import orm
from aiflow_notebook.scheduler import EmbeddedScheduler
from aiflow_notebook.storage.part_files import read_lines
from aiflow_notebook.testing.processes import our_processes
from aiflow_notebook.testing.waiting import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # models made here load in Flink's workers


class ThresholdModel:
    """Scores a click as 1 when its feature exceeds the threshold."""

    def __init__(self, threshold: float, tag: str):
        self.threshold, self.tag = threshold, tag

    def predict(self, row):
        return [row[0], int(float(row[1]) > self.threshold), self.tag]


def featurize(row):
    user, clicks = row
    return [user, clicks * 10]


def fit(rows):
    values = sorted(float(r[1]) for r in rows)
    return ThresholdModel(values[len(values) // 2], "v1")


def _lines(directory) -> list[str]:
    return sorted(read_lines(directory))


def _served_by(model: str, version: int) -> list[int]:
    """The job runs that lineage shows consuming ``model`` ``version``."""
    graph = af.lineage(model, version)
    return [graph.nodes[dst].id for _, dst, relation in graph.edges if relation == "served_by"]


def _groups_alive(store) -> list[str]:
    """Processes still in the process group of any job run (the JVMs PyFlink starts included)."""
    with store._db.reading() as session:
        leaders = [row.record["pid"] for row in session.query(orm.JobProcessRecord) if row.record]
    return our_processes(pgids=leaders) if leaders else []


def _define_prep(data: Path, platform: str = "local") -> None:
    with af.job_config("prep", engine="flink", parallelism=2, platform=platform):
        raw = af.read_dataset("clicks", uri=str(data / "clicks.csv"), schema={"user": "str", "clicks": "int"})
        af.write_dataset(af.transform(raw, featurize, name="featurize"), "features", uri=str(data / "features.csv"))


@pytest.mark.slow
def test_prep_train_serve_and_a_validated_version_restarts_serving_once(tmp_path, aiflow_home):
    data = tmp_path / "data"
    data.mkdir()
    (data / "clicks.csv").write_text("u1,1\nu2,2\nu3,3\nu4,4\n")
    (data / "click_stream").mkdir()
    with af.workflow("ctr"):
        _define_prep(data)
        with af.job_config("train"):
            af.train(af.read_dataset("features"), trainer=fit, model="ctr", name="train")
        with af.job_config("serve", engine="flink", streaming=True):
            stream = af.read_dataset("click_stream", uri=str(data / "click_stream"), schema={"user": "str", "x": "int"})
            af.write_dataset(af.predict(stream, model="ctr"), "scores", uri=str(data / "scores"))
        af.action_on_job_status("train", upstream="prep")
        af.action_on_job_status("serve", upstream="train")
        af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED", action="RESTART")

    with EmbeddedScheduler() as scheduler:
        run = scheduler.submit(af.compile("ctr"))
        try:
            wait_for(lambda: run.jobs()["serve"] == "RUNNING", what="serve to run")
            assert _lines(data / "features.csv") == ["u1,10", "u2,20", "u3,30", "u4,40"]
            v1 = scheduler.store.get_latest_model_version("ctr")
            assert v1.version == 1 and v1.stage == "GENERATED" and v1.job_run_id is not None
            lineage = scheduler.store.lineage("ctr", 1)
            assert {n.label.split("\n")[0] for n in lineage.nodes.values()} >= {"features", "ctr.train", "ctr v1"}

            (data / "click_stream" / "batch1.csv").write_text("a,5\nb,50\n")
            wait_for(lambda: len(_lines(data / "scores")) == 2, what="scores of batch 1")
            assert _lines(data / "scores") == ["a,0,v1", "b,1,v1"]  # threshold 30 (median of 10..40)

            v2 = scheduler.store.register_model_version("ctr", uri=save_model(ThresholdModel(4.0, "v2"), "ctr"))
            scheduler.store.register_model_version("ctr", uri=save_model(ThresholdModel(4.0, "v3"), "ctr"))
            scheduler.store.update_model_version("ctr", v2.version, "VALIDATED")  # v2, not the newer v3
            wait_for(lambda: [e.value for e in run.job_events() if e.key == "ctr.serve"][-1:] == ["RUNNING"] and
                      [e.value for e in run.job_events() if e.key == "ctr.serve"].count("RUNNING") == 2,
                      what="serve to restart")
            (data / "click_stream" / "batch2.csv").write_text("c,5\n")
            wait_for(lambda: any(line.startswith("c,") for line in _lines(data / "scores")), what="scores of batch 2")
            assert "c,1,v2" in _lines(data / "scores")
            # Barrier: the stop is handled after every action the earlier events decided, so a duplicate
            # restart would show up before the final KILLED.
            assert run.stop() == "KILLED"
            serve_states = [e.value for e in run.job_events() if e.key == "ctr.serve"]
            assert serve_states == ["STARTING", "RUNNING", "KILLED", "STARTING", "RUNNING", "KILLED"]  # restarted once
            serve_runs = [json.loads(e.context)["job_run"] for e in run.job_events()
                          if e.key == "ctr.serve" and e.value == "STARTING"]
            assert [_served_by("ctr", v) for v in (1, 2, 3)] == [[serve_runs[0]], [serve_runs[1]], []]
        finally:
            assert run.stop() in ("KILLED", "FAILED")
        wait_for(lambda: not _groups_alive(scheduler.store), timeout=30, what="job processes (and JVMs) to go")


@pytest.mark.slow
def test_the_same_prep_job_on_a_standalone_flink_cluster(tmp_path, aiflow_home, flink_cluster):
    data = tmp_path / "data"
    data.mkdir()
    (data / "clicks.csv").write_text('u1,1\nu2,2\n"u,3",3\n')
    with EmbeddedScheduler() as scheduler:
        with af.workflow("remote_prep"):
            _define_prep(data, platform=f"flink://{flink_cluster.address}")
        run = scheduler.submit(af.compile("remote_prep"))
        assert run.wait(240) == "FINISHED", run.errors()
        assert _lines(data / "features.csv") == ['"u,3",30', "u1,10", "u2,20"]
        ours = [job["state"] for job in flink_cluster.jobs() if job["name"].startswith("remote_prep.")]
        assert ours == ["FINISHED"]  # it really ran on the cluster
