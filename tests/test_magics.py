"""`%%aiflow` / `%aiflow` in a real IPython InteractiveShell: the DESIGN §2 path, re-runs, and bad lines."""

from __future__ import annotations

import pytest
from sdk_support import run

import aiflow_notebook as af
from aiflow_notebook.sdk import graph as _graph

SETUP = '''
SCHEMA = ["f0", "f1", "clicked"]

def scale(value):
    return float(value) * 2

def featurize(rows):
    return [[scale(v) for v in row] for row in rows]

def train_fn(rows):
    return len(rows)
'''
PREP = '''
%%aiflow job prep --engine flink --parallelism 2
raw = af.read_dataset("clicks", uri="data/clicks.csv", schema=SCHEMA)
feats = af.transform(raw, featurize, name="featurize")
af.write_dataset(feats, "features", uri="data/features.csv")
'''
TRAIN = '''
%%aiflow job train --engine pytorch --workers 2
af.train(af.read_dataset("features"), trainer=train_fn, model="ctr", name="train")
'''
SERVE = '''
%%aiflow job serve --engine flink --streaming
af.write_dataset(af.predict(af.read_dataset("click_stream"), model="ctr"), "scores")
'''
RULES = '''
af.action_on_job_status("train", upstream="prep")
af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED", action="RESTART")
'''
JOBS = ["prep", "train", "serve"]
NODES = ["read_clicks", "featurize", "write_features", "read_features", "train", "read_click_stream",
         "predict_ctr", "write_scores"]


@pytest.fixture
def ctr(shell):
    for cell in ("%aiflow workflow ctr --project demo", SETUP, PREP, TRAIN, SERVE, RULES):
        result = run(shell, cell, cell_id=cell.strip().splitlines()[0])
        assert result.success and not result.stderr, (cell, result.stderr, result.error)
    return shell


def state() -> tuple:
    """Everything the graph holds, comparable before/after."""
    graph = _graph.current_graph()
    return (graph.name, [(k, n.fn, n.inputs, n.engine) for k, n in graph.nodes.items()],
            [(j.name, j.engine, j.parallelism, j.streaming, j.properties) for j in graph.jobs.values()],
            list(graph.control_edges))


def test_the_design_workflow_defined_with_magics(ctr):
    workflow = af.compile()
    assert (workflow.name, workflow.project, list(workflow.jobs)) == ("ctr", "demo", JOBS)
    prep, train, serve = workflow.jobs.values()
    assert (prep.engine, prep.parallelism) == ("flink", 2)
    assert (train.engine, dict(train.properties)) == ("pytorch", {"workers": 2})
    assert (serve.engine, serve.streaming) == ("flink", True)
    assert len(workflow.control_edges) == 2
    assert ctr.user_ns["feats"].node == "featurize"  # the body ran in the user's namespace

    shown = run(ctr, "%aiflow show")
    (svg,) = shown.svgs
    for name in JOBS + NODES:
        assert f">{name}<" in svg, name


def test_a_job_cell_shows_the_split_graph_with_its_job_highlighted(shell):
    run(shell, SETUP)
    result = run(shell, PREP)
    (svg,) = result.svgs
    assert ">prep<" in svg and ">featurize<" in svg
    assert 'stroke="#d97706"' in svg  # the highlight colour


def test_rerunning_a_cell_replaces_its_block(ctr):
    before = af.compile()
    nodes, edges = len(_graph.current_graph().nodes), len(_graph.current_graph().control_edges)
    for cell in (PREP, TRAIN, RULES, PREP):
        assert run(ctr, cell, cell_id=cell.strip().splitlines()[0]).success
    after = af.compile()
    assert len(_graph.current_graph().nodes) == nodes == 8
    assert len(_graph.current_graph().control_edges) == edges == 2
    assert list(after.jobs) == JOBS and after.content_hash == before.content_hash


def test_a_changed_cell_replaces_its_nodes_and_a_renamed_one_its_job(ctr):
    changed = PREP.replace('name="featurize"', 'name="featurize_v2"')
    assert run(ctr, changed, cell_id=PREP.strip().splitlines()[0]).success
    names = [n.name for n in _graph.current_graph().nodes_of("prep")]
    assert names == ["read_clicks", "featurize_v2", "write_features"]

    renamed = TRAIN.replace("job train", "job fit")
    result = run(ctr, renamed, cell_id=TRAIN.strip().splitlines()[0])
    graph = _graph.current_graph()
    assert "train" not in graph.jobs and "fit" in graph.jobs
    # the rules cell still names "train": said in one paragraph, fixed by editing and re-running it
    assert "action_on_job_status('train', upstream='prep')" in result.stderr
    assert "acts on job 'train', which workflow 'ctr' does not have" in result.stderr
    graph.control_edges.clear()
    assert run(ctr, RULES.replace('"train"', '"fit"')).success and af.compile().jobs["fit"]


@pytest.mark.parametrize("line", [
    "%%aiflow job\nx = 1",
    "%%aiflow job prep --engine spark\nx = 1",
    "%%aiflow job prep --engien flink\nx = 1",
    "%%aiflow job prep --parallelism two\nx = 1",
    "%%aiflow job prep --parallelism 0\nx = 1",
    "%%aiflow job prep --workers 0\nx = 1",
    "%%aiflow job prep --property novalue\nx = 1",
    "%%aiflow job prep --periodic 'cron@every day'\nx = 1",
    "%%aiflow job 'bad name'\nx = 1",
    "%%aiflow job prep extra\nx = 1",
    "%aiflow job prep",
    "%aiflow frob",
    "%aiflow workflow",
    "%aiflow show --highlight nope",
    "%aiflow show nope",
    "%%aiflow show\nx = 1",
    "%aiflow reset --everything",
])
def test_a_bad_magic_line_prints_one_paragraph_and_changes_nothing(ctr, line):
    before = state()
    result = run(ctr, line)
    assert result.success, result.error
    assert result.stdout == "" and result.outputs == []
    paragraph = result.stderr.strip()
    assert paragraph.startswith("aiflow: ") and "\n" not in paragraph
    assert "Traceback" not in paragraph
    assert "Valid form: %" in paragraph or "no workflow called 'nope'" in paragraph
    assert state() == before


def test_a_bad_line_says_what_was_wrong(ctr):
    assert "unknown engine 'spark' (known: python, bash, flink, pytorch, tensorflow)" in run(
        ctr, "%%aiflow job prep --engine spark\nx = 1").stderr
    assert "unrecognized arguments: --engien flink" in run(ctr, "%%aiflow job prep --engien flink\nx=1").stderr
    assert "--property needs KEY=VALUE, got 'novalue'" in run(ctr, "%%aiflow job p --property novalue\nx=1").stderr
    assert "needs a cell body" in run(ctr, "%aiflow job prep").stderr
    assert "--periodic: interval 0.0 must be at least 0.1 s" in run(ctr, "%%aiflow job p --periodic 0\nx=1").stderr


def test_a_periodic_job_cell(shell):
    result = run(shell, "%%aiflow job tick --engine bash --property command=true --periodic 'interval@0 0 1 0'\npass")
    assert result.success and not result.stderr, result.stderr
    assert af.compile().jobs["tick"].properties["periodic"] == {"interval": 60.0}
    run(shell, "%%aiflow job tock --periodic '*/5 * * * *'\naf.read_dataset('d')")
    assert af.compile().jobs["tock"].properties["periodic"] == {"cron": "*/5 * * * *"}


def test_an_sdk_error_in_the_body_prints_one_paragraph_and_keeps_the_old_block(ctr):
    before = state()
    result = run(ctr, PREP + 'af.transform(raw, featurize, name="featurize")\n')
    assert result.success and result.outputs == []
    assert result.stderr.strip().startswith("aiflow: job 'prep' was not changed: node 'featurize'")
    assert "defined twice in the same block" in result.stderr and "Traceback" not in result.stderr
    assert state() == before


def test_a_cell_that_breaks_the_workflow_is_kept_and_the_problem_printed(ctr):
    result = run(ctr, "%%aiflow job thief\n\naf.train(feats, trainer=train_fn, model='ctr')")
    assert result.success and result.outputs == []
    paragraph = result.stderr.strip()
    assert paragraph.startswith("aiflow: workflow 'ctr' does not compile yet") and "\n" not in paragraph
    assert "node 'train_ctr' (train in job 'thief', %%aiflow job thief, line 3)" in paragraph
    assert "must go through a dataset" in paragraph
    fixed = run(ctr, "%%aiflow job thief\naf.train(af.read_dataset('features'), trainer=train_fn, model='ctr')")
    assert fixed.success and fixed.svgs and not fixed.stderr


def test_a_failing_body_shows_its_traceback_and_changes_nothing(ctr):
    before = state()
    result = run(ctr, "%%aiflow job prep\nraw = af.read_dataset('x')\nraise RuntimeError('boom in the cell')")
    assert not result.success and isinstance(result.error, RuntimeError)
    assert state() == before


def test_generated_help(ctr):
    doc = ctr.find_line_magic("aiflow").__doc__
    assert doc == ctr.find_cell_magic("aiflow").__doc__
    for form in ("%%aiflow job [--engine E] [--parallelism N] [--platform P] [--streaming]", "[--workers N] [--ps N]",
                 "[--property K=V]", "%aiflow workflow [--project P] NAME", "%aiflow show [--highlight JOB]",
                 "%aiflow reset [--all]"):
        assert form in doc, form
    printed = run(ctr, "%aiflow help").stdout
    assert "%%aiflow job" in printed and "submit" in printed
    assert run(ctr, "%aiflow").stdout == printed


def test_workflow_show_and_reset(ctr):
    out = run(ctr, "%aiflow workflow other").stdout
    assert "workflow 'other' (project 'default') selected: 0 jobs, 0 nodes" in out
    assert run(ctr, "%aiflow show ctr --highlight serve").svgs
    out = run(ctr, "%aiflow workflow ctr").stdout
    assert "workflow 'ctr' (project 'demo') selected: 3 jobs, 8 nodes, 2 control edges" in out
    assert "is empty again" in run(ctr, "%aiflow reset").stdout
    assert _graph.current_graph().nodes == {} and _graph.get_workflow("other") is not None
    assert "forgot every workflow" in run(ctr, "%aiflow reset --all").stdout
    assert _graph.list_workflows() == []


def test_job_options_become_job_settings(shell):
    result = run(shell, "%%aiflow job t --engine tensorflow --workers 3 --ps 1 --platform k8s "
                        "--property lr=0.1 --property tag=nightly\naf.read_dataset('d')")
    assert result.success and not result.stderr, result.stderr
    job = af.compile().jobs["t"]
    assert (job.engine, job.platform, dict(job.properties)) == ("tensorflow", "k8s", {"lr": 0.1, "tag": "nightly",
                                                                                     "workers": 3, "ps": 1})
    assert "tensorflow · parallelism 1 · platform k8s · workers 3 · ps 1" in result.svgs[0]
