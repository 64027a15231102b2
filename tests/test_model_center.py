"""Model center and lineage through the public API, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json

import pytest

import aiflow_notebook as af
from aiflow_notebook.meta import (
    InvalidStageError,
    MetadataStore,
    NotFoundError,
    RecordingPublisher,
    Stage,
    StageTransitionError,
    UnknownModelError,
    UnknownModelVersionError,
)


def test_versions_are_numbered_per_model_and_start_generated(store):
    store.register_model("ctr")
    store.register_model("churn")
    v1 = store.register_model_version("ctr", uri="file:///m/ctr/1", metrics={"auc": 0.71})
    v2 = store.register_model_version("ctr", uri="file:///m/ctr/2", metrics={"auc": 0.74})
    c1 = store.register_model_version("churn", uri="file:///m/churn/1")
    assert (v1.version, v2.version, c1.version) == (1, 2, 1)
    assert v1.stage is Stage.GENERATED and v1.metrics == {"auc": 0.71} and v1.model == "ctr"
    assert [v.version for v in store.list_model_versions("ctr")] == [1, 2]
    assert store.get_model_version("ctr", 2).uri == "file:///m/ctr/2"
    assert store.register_model("ctr").name == "ctr"  # registering again is harmless
    assert [m.name for m in store.list_models()] == ["churn", "ctr"]


def test_stage_changes_publish_model_events_after_commit(store):
    store.register_model("ctr")
    store.register_model_version("ctr", uri="u1")
    store.register_model_version("ctr", uri="u2")
    validated = store.update_model_version("ctr", 2, "validated")  # case-insensitive
    assert validated.stage is Stage.VALIDATED
    store.update_model_version("ctr", 2, Stage.VALIDATED)  # same stage: no-op, no second event
    store.update_model_version("ctr", 2, Stage.DEPLOYED)
    events = store.publisher.events
    assert [(e.key, e.event_type) for e in events] == [
        ("ctr", "MODEL_GENERATED"), ("ctr", "MODEL_GENERATED"), ("ctr", "MODEL_VALIDATED"), ("ctr", "MODEL_DEPLOYED")]
    payload = json.loads(events[2].value)
    assert payload["model"] == "ctr" and payload["version"] == 2 and payload["stage"] == "VALIDATED"


def test_latest_version_by_stage(store):
    store.register_model("ctr")
    for i in range(1, 5):
        store.register_model_version("ctr", uri=f"u{i}")
    store.update_model_version("ctr", 2, "VALIDATED")
    store.update_model_version("ctr", 3, "VALIDATED")
    store.update_model_version("ctr", 4, "DELETED")
    assert store.get_latest_model_version("ctr").version == 3  # DELETED is never "latest"
    assert store.get_latest_model_version("ctr", "VALIDATED").version == 3
    assert store.get_latest_model_version("ctr", Stage.DEPLOYED) is None
    assert [v.version for v in store.list_model_versions("ctr", stage="VALIDATED")] == [2, 3]


def test_bad_input_is_refused_and_nothing_is_half_written(store):
    publisher = store.publisher
    with pytest.raises(UnknownModelError, match=r"model 'nope' is not registered.*register_model\('nope'\)"):
        store.register_model_version("nope", uri="u")
    store.register_model("ctr")
    store.register_model_version("ctr", uri="u1")
    with pytest.raises(InvalidStageError, match=r"unknown stage 'SHIPPED'.*GENERATED, VALIDATED, DEPLOYED"):
        store.update_model_version("ctr", 1, "SHIPPED")
    with pytest.raises(UnknownModelVersionError, match="model 'ctr' has no version 7"):
        store.update_model_version("ctr", 7, "VALIDATED")
    store.update_model_version("ctr", 1, "DELETED")
    with pytest.raises(StageTransitionError, match="cannot go from DELETED to DEPLOYED.*none: it is final"):
        store.update_model_version("ctr", 1, "DEPLOYED")
    # a registration that fails half-way (unknown job run) leaves no version, metric or event behind
    events_before = len(publisher.events)
    with pytest.raises(NotFoundError, match="job run 999 does not exist"):
        store.register_model_version("ctr", uri="u2", metrics={"auc": 0.9}, job_run=999)
    with pytest.raises(af.AIFlowError, match="metrics must be JSON-serialisable"):
        store.register_model_version("ctr", uri="u2", metrics={"auc": object()})
    assert len(publisher.events) == events_before
    assert [v.version for v in store.list_model_versions("ctr")] == [1]
    assert store.register_model_version("ctr", uri="u2").version == 2  # no gap from the failures
    assert store.get_model_version("ctr", 1).stage is Stage.DELETED


def test_forbidden_transitions_follow_the_lifecycle(store):
    store.register_model("m")
    store.register_model_version("m", uri="u")
    store.update_model_version("m", 1, "VALIDATED")
    with pytest.raises(StageTransitionError, match="from VALIDATED to GENERATED"):
        store.update_model_version("m", 1, "GENERATED")
    store.update_model_version("m", 1, "DEPLOYED")
    store.update_model_version("m", 1, "DEPRECATED")
    assert store.update_model_version("m", 1, "DEPLOYED").stage is Stage.DEPLOYED  # rollback is allowed


def test_lineage_dataset_to_job_run_to_model_version_to_serving_job(store):
    store.register_dataset("clicks", uri="file:///data/clicks.csv", schema=["user", "ad", "clicked"])
    store.register_dataset("features", uri="file:///data/features.csv")
    store.register_model("ctr")
    prep = store.start_job_run("ctr_wf", "prep", engine="flink")
    store.record_dataset_read(prep, "clicks")
    store.record_dataset_write(prep, "features")
    store.update_job_run(prep.id, "FINISHED")
    train = store.start_job_run("ctr_wf", "train", engine="pytorch")
    store.record_dataset_read(train.id, "features")
    version = store.register_model_version("ctr", uri="file:///m/1", metrics={"auc": 0.8}, job_run=train)
    serve = store.start_job_run("ctr_wf", "serve", engine="flink")
    store.record_model_consumer("ctr", version.version, serve)
    store.record_model_consumer("ctr", version.version, serve)  # recorded once
    other = store.register_model_version("ctr", uri="file:///m/2")

    graph = store.lineage("ctr", 1)
    labels = {node.label.split("\n")[0] for node in graph.nodes.values()}
    assert labels == {"clicks", "features", "ctr_wf.prep", "ctr_wf.train", "ctr_wf.serve", "ctr v1"}
    relations = sorted(rel for _, _, rel in graph.edges)
    assert relations == ["produced", "read_by", "read_by", "served_by", "wrote"]
    assert f"model_version_{other.id}" not in graph.nodes
    assert f"model_version_{other.id}" in store.lineage("ctr").nodes  # all versions
    dot = graph.to_graphviz().source
    assert "clicks" in dot and "ctr_wf.serve" in dot
    bundle = graph._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"] and "ctr_wf.train" in bundle["image/svg+xml"]
    assert store.get_job_run(prep.id).state == "FINISHED" and store.get_job_run(prep.id).ended_at is not None
    with pytest.raises(NotFoundError, match="dataset 'nope' is not registered"):
        store.record_dataset_read(prep, "nope")


def test_publisher_is_pluggable(meta_url):
    recorder = RecordingPublisher()
    with MetadataStore(meta_url, publisher=recorder) as store:
        store.register_model("m")
        store.register_model_version("m", uri="u")
    assert [e.event_type for e in recorder.events] == ["MODEL_GENERATED"]


def test_af_functions_use_the_default_store_under_aiflow_home(aiflow_home):
    af.register_model("ctr")
    version = af.register_model_version("ctr", uri="file:///m/1", metrics={"auc": 0.5})
    af.update_model_version("ctr", version.version, "VALIDATED")
    assert af.get_latest_model_version("ctr", "VALIDATED").version == 1
    assert af.get_model_version("ctr", 1).stage is af.Stage.VALIDATED
    assert len(af.list_model_versions("ctr")) == 1
    assert (aiflow_home / "meta.db").exists()
    assert "ctr v1" in af.lineage("ctr").to_graphviz().source
