"""Which model version a predict serves, and lineage from it to the job run that served it.

The choice rules are unit-tested on a real SQLite store; the rest runs real python-engine job processes
under the embedded scheduler, and reads the outcome from the scored output, the job log and ``af.lineage``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.core.errors import InvalidArgumentError
from aiflow_notebook.engines.model_io import ModelSelectionError, choose_model_version, save_model
from aiflow_notebook.events import Event
from aiflow_notebook.testing.waiting import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # models made here load in job processes


class TaggedModel:
    """Appends its tag to each row, so the scored output says which version scored it."""

    def __init__(self, tag: str):
        self.tag = tag

    def predict(self, row):
        return [*row, self.tag]


# --- the choice, on a real store ------------------------------------------------------------------------


def _versions(store, *stages: str) -> None:
    """Versions of model ``m`` in ``stages``, in order (``store``: the shared fixture, SQLite then PostgreSQL)."""
    store.register_model("m")
    for stage in stages:
        version = store.register_model_version("m", uri=f"file:///m/{stage}")
        if stage != "GENERATED":
            store.update_model_version("m", version.version, stage)


def _event(event_type: str, version: int, key: str = "m") -> dict:
    return {"key": key, "value": json.dumps({"model": key, "version": version}), "event_type": event_type,
            "namespace": "default", "sender": "model_center", "version": 42, "context": None}


def test_the_default_is_the_newest_validated_or_deployed_else_the_newest_generated_with_a_note(store):
    _versions(store, "GENERATED", "GENERATED")
    chosen, why = choose_model_version(store, "m")
    assert chosen.version == 2 and "NOTE" in why and "GENERATED" in why
    store.update_model_version("m", 1, "VALIDATED")
    chosen, why = choose_model_version(store, "m")
    assert chosen.version == 1 and "NOTE" not in why  # validated v1 beats the newer, unvalidated v2
    _versions(store, "DEPLOYED", "GENERATED")  # v3 deployed, v4 generated
    assert choose_model_version(store, "m")[0].version == 3
    store.update_model_version("m", 3, "DEPRECATED")
    assert choose_model_version(store, "m")[0].version == 1
    store.update_model_version("m", 1, "DELETED")
    chosen, why = choose_model_version(store, "m")
    assert chosen.version == 4 and "NOTE" in why  # nothing servable left: the newest generated, said so


def test_stage_and_version_select_explicitly_and_errors_name_the_model_and_what_exists(store):
    _versions(store, "GENERATED", "DEPLOYED", "VALIDATED", "DELETED")
    assert choose_model_version(store, "m", stage="deployed")[0].version == 2
    assert choose_model_version(store, "m", stage="GENERATED")[0].version == 1
    assert choose_model_version(store, "m", version=1)[0].version == 1
    assert choose_model_version(store, "m", version="3", stage="VALIDATED")[0].version == 3
    existing = "versions: v1 GENERATED, v2 DEPLOYED, v3 VALIDATED, v4 DELETED"
    with pytest.raises(ModelSelectionError, match=f"model 'm' has no DEPRECATED version.*{existing}"):
        choose_model_version(store, "m", stage="DEPRECATED")
    with pytest.raises(ModelSelectionError, match=f"model 'm' has no version 9 .*{existing}"):
        choose_model_version(store, "m", version=9)
    with pytest.raises(ModelSelectionError, match="model 'm' has no version 4"):
        choose_model_version(store, "m", version=4)  # deleted
    with pytest.raises(ModelSelectionError, match="model 'm' version 1 is GENERATED, not DEPLOYED"):
        choose_model_version(store, "m", version=1, stage="DEPLOYED")
    with pytest.raises(ModelSelectionError, match="model 'nope' is not registered"):
        choose_model_version(store, "nope")
    store.register_model("empty")
    with pytest.raises(ModelSelectionError, match="model 'empty' has no version to predict with.*versions: none"):
        choose_model_version(store, "empty")


def test_a_triggering_model_event_names_the_version_unless_a_version_is_pinned(store):
    _versions(store, "VALIDATED", "VALIDATED", "GENERATED")
    chosen, why = choose_model_version(store, "m", trigger=_event("MODEL_VALIDATED", 1))
    assert chosen.version == 1 and "MODEL_VALIDATED of version 1" in why  # the default would be v2
    assert choose_model_version(store, "m", trigger=_event("MODEL_GENERATED", 3))[0].version == 3
    assert choose_model_version(store, "m", version=2, trigger=_event("MODEL_VALIDATED", 1))[0].version == 2
    assert choose_model_version(store, "m", trigger=_event("MODEL_VALIDATED", 1, key="other"))[0].version == 2
    store.update_model_version("m", 1, "DEPRECATED")
    assert choose_model_version(store, "m", trigger=_event("MODEL_DEPRECATED", 1))[0].version == 2
    chosen, why = choose_model_version(store, "m", stage="VALIDATED", trigger=_event("MODEL_GENERATED", 3))
    assert chosen.version == 2 and "names version 3, which is GENERATED" in why
    assert choose_model_version(store, "m", trigger={**_event("MODEL_VALIDATED", 1), "value": "x"})[0].version == 2


def test_predict_checks_version_and_stage_where_it_is_defined():
    with af.workflow("bad_predict"), af.job_config("serve"):
        source = af.read_dataset("requests", uri="requests.json")
        with pytest.raises(InvalidArgumentError, match="stage 'LIVE' is not one of GENERATED, VALIDATED"):
            af.predict(source, model="m", stage="LIVE")
        with pytest.raises(InvalidArgumentError, match="version must be a version number"):
            af.predict(source, model="m", version="latest")
        af.predict(source, model="m", stage="deployed", name="p")
    node = next(n for n in af.compile("bad_predict").jobs["serve"].nodes if n.name == "p")
    assert node.model_stage == "DEPLOYED"


# --- through the scheduler: real job processes --------------------------------------------------------------


def _register(store, model: str, tag: str, stage: str | None = None) -> int:
    version = store.register_model_version(model, uri=save_model(TaggedModel(tag), model)).version
    if stage is not None:
        store.update_model_version(model, version, stage)
    return version


def _job_runs(run, job: str, state: str) -> list[int]:
    """Ids of the job runs of ``job`` that reached ``state``, in order."""
    key = f"{run.workflow.name}.{job}"
    return [json.loads(e.context)["job_run"] for e in run.job_events() if e.key == key and e.value == state]


def _log(store, job_run: int) -> str:
    return Path(store.get_job_run(job_run).log_uri.removeprefix("file://")).read_text()


def _consumers(model: str, version: int) -> list[int]:
    """Job runs that ``af.lineage`` shows as having served ``model`` ``version``."""
    graph = af.lineage(model, version)
    start = next(node.key for node in graph.nodes_of("model_version") if node.attrs["version"] == version)
    return sorted(graph.nodes[dst].id for src, dst, relation in graph.edges if src == start and relation == "served_by")


def hold(context):
    Path(context.properties["marker"]).write_text("up")
    while True:
        time.sleep(0.1)


def test_a_job_restarted_by_a_model_version_event_serves_exactly_that_version(scheduler, tmp_path):
    store = scheduler.store  # publishes model-center events onto the scheduler's bus
    store.register_model("m")
    _register(store, "m", "v1", "VALIDATED")
    (tmp_path / "requests.json").write_text("[[1], [2]]")
    scores, marker = tmp_path / "scores.json", tmp_path / "hold.txt"
    with af.workflow("serving") as workflow:
        with af.job_config("hold"):  # keeps the run alive between restarts of the batch serving job
            af.user_define_operation(hold, name="hold", properties={"marker": str(marker)}, output_num=0)
        with af.job_config("serve"):
            requests = af.read_dataset("requests", uri=str(tmp_path / "requests.json"))
            af.write_dataset(af.predict(requests, model="m"), "scores", uri=str(scores))
        af.action_on_model_version_event("serve", model="m", event_type="MODEL_VALIDATED", action="RESTART")
    run = scheduler.submit(af.compile(workflow.name))
    try:
        served = wait_for(lambda: _job_runs(run, "serve", "FINISHED"), timeout=120, what="serve to finish")
        assert json.loads(scores.read_text()) == [[1, "v1"], [2, "v1"]]
        for tag in ("v2", "v3", "v4"):
            _register(store, "m", tag)  # GENERATED: no restart
        store.update_model_version("m", 3, "VALIDATED")  # the newest version, v4, is not validated
        served = wait_for(lambda: (r := _job_runs(run, "serve", "FINISHED"))[1:] and r, timeout=120,
                          what="serve to restart on v3 being validated")
        assert json.loads(scores.read_text()) == [[1, "v3"], [2, "v3"]]
        store.update_model_version("m", 2, "VALIDATED")  # older than v3, yet it is what the event names
        served = wait_for(lambda: (r := _job_runs(run, "serve", "FINISHED"))[2:] and r, timeout=120,
                          what="serve to restart on v2 being validated")
        assert json.loads(scores.read_text()) == [[1, "v2"], [2, "v2"]]
        assert "serving model m version 2 (VALIDATED): the job run was started by MODEL_VALIDATED of version 2" \
            in _log(store, served[2])
        assert len(served) == 3 and marker.exists()
        assert [_consumers("m", v) for v in (1, 2, 3, 4)] == [[served[0]], [served[2]], [served[1]], []]
    finally:
        assert run.stop() == "KILLED"


def test_predict_serves_the_stage_or_version_asked_for_and_a_missing_one_fails_the_job(scheduler, tmp_path):
    store = scheduler.store
    store.register_model("m")
    for tag, stage in (("v1", None), ("v2", "DEPLOYED"), ("v3", "VALIDATED"), ("v4", None)):
        _register(store, "m", tag, stage)
    (tmp_path / "requests.json").write_text("[[7]]")
    asks = {"default": {}, "staged": {"stage": "DEPLOYED"}, "pinned": {"version": 1},
            "missing": {"stage": "DEPRECATED"}}
    with af.workflow("picking") as workflow:
        for job, selection in asks.items():
            with af.job_config(job):
                requests = af.read_dataset("requests", uri=str(tmp_path / "requests.json"))
                af.write_dataset(af.predict(requests, model="m", **selection), f"out_{job}",
                                 uri=str(tmp_path / f"{job}.json"))
    run = scheduler.submit(af.compile(workflow.name))
    assert run.wait(180) == "FAILED"
    assert run.jobs() == {"default": "FINISHED", "staged": "FINISHED", "pinned": "FINISHED", "missing": "FAILED"}
    outputs = {job: json.loads((tmp_path / f"{job}.json").read_text()) for job in ("default", "staged", "pinned")}
    assert outputs == {"default": [[7, "v3"]], "staged": [[7, "v2"]], "pinned": [[7, "v1"]]}
    assert ("model 'm' has no DEPRECATED version to predict with (versions: v1 GENERATED, v2 DEPLOYED, "
            "v3 VALIDATED, v4 GENERATED)") in run.errors()["missing"]


def fit(rows):
    return TaggedModel(f"trained on {len(rows)} rows")


def test_lineage_runs_from_the_training_data_to_the_job_run_that_served_the_model(scheduler, tmp_path):
    (tmp_path / "features.json").write_text("[[1], [2], [3]]")
    (tmp_path / "requests.json").write_text("[[5]]")
    with af.workflow("lineage") as workflow:
        with af.job_config("train"):
            af.train(af.read_dataset("features", uri=str(tmp_path / "features.json")), trainer=fit, model="lm")
        with af.job_config("serve"):
            requests = af.read_dataset("requests", uri=str(tmp_path / "requests.json"))
            af.write_dataset(af.predict(requests, model="lm"), "lm_scores", uri=str(tmp_path / "scores.json"))
        af.action_on_job_status("serve", upstream="train")
    run = scheduler.submit(af.compile(workflow.name))
    assert run.wait(180) == "FINISHED", run.errors()
    assert json.loads((tmp_path / "scores.json").read_text()) == [[5, "trained on 3 rows"]]
    (train_run,), (serve_run,) = _job_runs(run, "train", "FINISHED"), _job_runs(run, "serve", "FINISHED")
    graph = af.lineage("lm", 1)
    label = {key: node.label.split("\n")[0] for key, node in graph.nodes.items()}
    edges = {(label[src], relation, label[dst]) for src, dst, relation in graph.edges}
    assert edges == {("features", "read_by", "lineage.train"), ("lineage.train", "produced", "lm v1"),
                     ("lm v1", "served_by", "lineage.serve"), ("lineage.serve", "wrote", "lm_scores")}
    assert {n.id for n in graph.nodes_of("job_run")} == {train_run, serve_run}
    assert "NOTE: no version is VALIDATED or DEPLOYED, so the newest GENERATED one" in _log(scheduler.store, serve_run)


def peek(context):
    Path(context.properties["out"]).write_text(json.dumps(context.trigger))


def test_a_job_started_by_a_rule_sees_the_event_that_fired_it(scheduler, tmp_path):
    out = tmp_path / "trigger.json"
    with af.workflow("peeking") as workflow:
        with af.job_config("peek"):
            af.user_define_operation(peek, name="peek", properties={"out": str(out)}, output_num=0)
        af.action_on_event("peek", key="go", event_type="GO")
    run = scheduler.submit(af.compile(workflow.name))
    sent = scheduler.client.send_event(Event(key="go", value="now", event_type="GO", context='{"why": "test"}'))
    assert run.wait(120) == "FINISHED", run.errors()
    trigger = json.loads(out.read_text())
    assert trigger == {"key": "go", "value": "now", "event_type": "GO", "namespace": "default",
                       "sender": sent.sender, "version": sent.version, "context": '{"why": "test"}'}
