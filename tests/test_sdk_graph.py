"""The AI graph: nodes, channels, execution blocks (nesting, plain calls), control edges as plain data."""

from __future__ import annotations

import pytest

import aiflow_notebook as af
from aiflow_notebook.sdk import graph as _graph


def ident(x):
    return x


def pair(x):
    return x, x


def test_nodes_return_channels_and_passing_them_makes_data_edges():
    with af.workflow("w"), af.job_config("j"):
        raw = af.read_dataset("clicks", uri="file:///tmp/clicks.csv", schema=["a", "b"])
        left, right = af.transform(raw, pair, output_num=2)
        model = af.train([left, right], trainer=ident, model="m")
        written = af.write_dataset(left, "out")
    assert isinstance(raw, af.Channel) and (raw.job, raw.node, raw.index) == ("j", "read_clicks", 0)
    assert (left.index, right.index) == (0, 1)
    assert written.index == -1  # write_dataset has no output
    graph = af.workflow("w")
    train = graph.nodes[("j", model.node)]
    assert train.kind == "train" and train.model == "m" and train.inputs == (left, right)
    assert graph.nodes[("j", "read_clicks")].dataset == af.DatasetSpec("clicks", "file:///tmp/clicks.csv", ["a", "b"])


def test_every_node_kind_records_its_kind_model_and_default_name():
    with af.workflow("w"), af.job_config("j"):
        raw = af.read_dataset("d")
        af.evaluate(raw, model="m", evaluator=ident)
        af.model_validate(raw, model="m", validator=ident, version=3)
        af.predict(raw, model="m", version="2")
        af.push_model("m", pusher=ident)
        af.user_define_operation(ident, inputs=[raw], output_num=0)
        af.user_define_operation(lambda: 1)
    nodes = {node.name: node for node in af.workflow("w").nodes.values()}
    assert {name: node.kind for name, node in nodes.items()} == {
        "read_d": "read_dataset", "evaluate_m": "evaluate", "validate_m": "model_validate", "predict_m": "predict",
        "push_m": "push_model", "ident": "user_define_operation", "operation": "user_define_operation"}
    assert nodes["validate_m"].model_version == "3" and nodes["predict_m"].model_version == "2"


def test_auto_names_get_a_suffix_and_explicit_names_replace_in_a_later_block():
    with af.workflow("w"):
        with af.job_config("j"):
            raw = af.read_dataset("d")
            a = af.transform(raw, ident)
            b = af.transform(raw, ident)
            af.transform(raw, ident, name="keep")
        assert (a.node, b.node) == ("ident", "ident_2")
        with af.job_config("j"):  # a later block redefining "keep" replaces it
            af.transform(b, pair, name="keep")
    nodes = af.workflow("w").nodes
    assert nodes[("j", "keep")].fn is pair and len(nodes) == 4


def test_same_explicit_name_twice_in_one_block_is_an_error_naming_it():
    with af.workflow("w"), af.job_config("j"):
        raw = af.read_dataset("d")
        af.transform(raw, ident, name="twice")
        with pytest.raises(af.DuplicateNodeError, match="node 'twice'.*defined twice"):
            af.transform(raw, ident, name="twice")


def test_blocks_nest_and_inner_settings_override_outer_ones():
    with af.workflow("w"):
        with af.global_config(engine="flink", parallelism=4, properties={"a": 1, "b": 1}):
            with af.job_config("inherits"):
                af.read_dataset("d")
            with af.job_config("overrides", engine="bash", properties={"b": 2}):
                af.read_dataset("d")
            with af.engine("python"), af.job_config("engine_block"):
                af.read_dataset("d")
        with af.job_config("defaults"):
            af.read_dataset("d")
    jobs = af.workflow("w").jobs
    assert (jobs["inherits"].engine, jobs["inherits"].parallelism, jobs["inherits"].properties) == ("flink", 4,
                                                                                                     {"a": 1, "b": 1})
    assert (jobs["overrides"].engine, jobs["overrides"].properties) == ("bash", {"a": 1, "b": 2})
    assert jobs["engine_block"].engine == "python" and jobs["engine_block"].parallelism == 4
    d = jobs["defaults"]
    assert (d.engine, d.parallelism, d.platform, d.streaming, d.properties) == ("python", 1, "local", False, {})


def test_engine_block_inside_a_job_sets_the_engine_of_its_nodes():
    with af.workflow("w"), af.job_config("j", engine="flink"):
        outer = af.read_dataset("d")
        with af.engine("python"):
            inner = af.transform(outer, ident)
    nodes = af.workflow("w").nodes
    assert nodes[("j", outer.node)].engine == "flink" and nodes[("j", inner.node)].engine == "python"


def test_plain_calls_apply_from_now_on_and_a_with_block_undoes_what_was_called_inside():
    af.workflow("plain", project="p")
    af.job_config("first", parallelism=3)
    af.read_dataset("d")
    with af.workflow("other"):
        af.job_config("inner")  # plain call inside a with block: closed when the block ends
        af.read_dataset("d")
    af.read_dataset("e")  # back in workflow "plain", job "first"
    assert set(af.workflow("plain").jobs) == {"first"} and len(af.workflow("plain").nodes) == 2
    assert af.workflow("plain").project == "p"
    assert set(af.workflow("other").jobs) == {"inner"}


def test_nodes_outside_any_block_go_to_the_default_job_of_the_default_workflow():
    channel = af.read_dataset("d")
    assert (channel.workflow, channel.job) == ("default", "default")


def test_channels_of_another_workflow_or_without_output_are_refused_naming_the_node():
    with af.workflow("a"), af.job_config("j"):
        raw = af.read_dataset("d")
        written = af.write_dataset(raw, "x")
    with af.workflow("b"), af.job_config("k"):
        with pytest.raises(af.InvalidArgumentError, match="transform 'ident' in job 'k'.*workflow 'a'"):
            af.transform(raw, ident)
    with af.workflow("a"), af.job_config("j"):
        with pytest.raises(af.InvalidArgumentError, match="node 'write_x' in job 'j' has no output"):
            af.transform(written, ident)
        with pytest.raises(af.InvalidArgumentError, match="transform 'f' in job 'j'.*got int 1"):
            af.transform([1, 2], ident, name="f")
        with pytest.raises(af.InvalidArgumentError, match="expected a function"):
            af.transform(raw, "not a function")


@pytest.mark.parametrize("call, message", [
    (lambda: af.job_config("bad name"), "job name 'bad name' is not valid"),
    (lambda: af.job_config("j", parallelism=0), r"job_config\('j'\): parallelism must be a positive integer"),
    (lambda: af.global_config(paralelism=2), "unknown setting.*paralelism"),
    (lambda: af.action_on_job_status("j", upstream="u", action="LAUNCH"),
     "control edge to job 'j': action 'LAUNCH' is not one of START, STOP, RESTART, NONE"),
    (lambda: af.action_on_job_status("j", upstream="u", status="DONE"), "status 'DONE' is not one of"),
    (lambda: af.action_on_event("j", "k", life="FOREVER"), r"action_on_event\('j', key='k'\): life 'FOREVER'"),
    (lambda: af.action_on_event("j", "k", value_condition="SAME"), "value_condition 'SAME' is not one of"),
    (lambda: af.action_on_model_version_event("j", model="m", event_type="MODEL_BORN"), "MODEL_BORN"),
    (lambda: af.action_on_events("j", condition="x"), "must be af.MeetAll"),
])
def test_bad_arguments_are_refused_naming_the_culprit(call, message):
    with pytest.raises(af.InvalidArgumentError, match=message):
        call()


def test_job_status_rule_is_sugar_over_an_event_condition():
    with af.workflow("ctr"):
        edge = af.action_on_job_status("train", upstream="prep")
    assert edge.job == "train" and edge.action is af.START and edge.upstream == "prep"
    assert edge.condition == af.MeetAny(af.EventCondition(key="ctr.prep", value="FINISHED",
                                                          event_type="JOB_STATUS_CHANGED"))
    assert edge.to_dict() == {
        "job": "train", "action": "START", "upstream": "prep", "model": None,
        "condition": {"mode": "ANY", "events": [{"key": "ctr.prep", "value": "FINISHED",
                                                  "event_type": "JOB_STATUS_CHANGED", "namespace": "default",
                                                  "sender": "*", "value_condition": "EQUALS", "life": "ONCE"}]}}


def test_model_version_rule_is_sugar_over_an_updated_event_on_the_model_key():
    with af.workflow("ctr"):
        edge = af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED")
    (event,) = edge.condition.events
    assert edge.action is af.RESTART
    assert (event.key, event.event_type, event.namespace, event.value, event.value_condition, event.life) == (
        "ctr", "MODEL_VALIDATED", "default", "*", af.UPDATED, af.ONCE)


def test_event_rules_with_meet_all_and_meet_any_keep_every_field():
    with af.workflow("w"):
        single = af.action_on_event("j", "k", value="v", event_type="T", namespace="ns", sender="s",
                                    value_condition="updated", action="stop", life="repeated")
        combined = af.action_on_events("j", af.MeetAll(af.EventCondition("a", "1"),
                                                       af.EventCondition("b", event_type="X", life=af.REPEATED)),
                                       action=af.RESTART)
    (event,) = single.condition.events
    assert (event.key, event.value, event.event_type, event.namespace, event.sender) == ("k", "v", "T", "ns", "s")
    assert (event.value_condition, event.life, single.action) == (af.UPDATED, af.REPEATED, af.STOP)
    assert combined.condition.mode == "ALL" and [e.key for e in combined.condition.events] == ["a", "b"]
    assert af.ControlEdge.from_dict(combined.to_dict()) == combined
    assert af.MeetAll(af.EventCondition("a")) != af.MeetAny(af.EventCondition("a"))


def test_adding_the_same_control_edge_twice_keeps_one():
    with af.workflow("w"):
        af.action_on_job_status("b", upstream="a")
        af.action_on_job_status("b", upstream="a")
        af.action_on_job_status("b", upstream="a", action="RESTART")
    assert len(af.workflow("w").control_edges) == 2


def test_drop_job_and_snapshot_restore():
    with af.workflow("w"):
        with af.job_config("a"):
            af.read_dataset("d")
        with af.job_config("b"):
            af.read_dataset("d")
        graph = af.workflow("w")
        state = graph.snapshot()
        graph.drop_job("a")
        assert set(graph.jobs) == {"b"} and len(graph.nodes) == 1
        graph.restore(state)
        assert list(graph.jobs) == ["a", "b"] and len(graph.nodes) == 2


def test_unknown_workflow_is_named():
    with pytest.raises(af.UnknownWorkflowError, match="no workflow called 'nope'"):
        af.compile("nope")
    assert _graph.list_workflows() == []


def test_a_plain_workflow_call_inside_a_with_block_is_closed_with_it():
    af.workflow("outer")
    with af.workflow("inner"):
        af.workflow("inner")
        af.workflow("third")
        assert _graph.current_graph().name == "third"
    assert _graph.current_graph().name == "outer"
