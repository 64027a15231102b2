"""Reading runs back from the metadata store: what the server extension's run list and run view show."""

from __future__ import annotations

import pytest

from aiflow_notebook.meta import NotFoundError


def test_runs_newest_first_by_workflow_with_their_job_runs(store):
    first = store.create_workflow_run("ctr", project="demo", properties={"cwd": "/w"})
    other = store.create_workflow_run("etl")
    latest = store.create_workflow_run("ctr", project="demo")
    attempt0 = store.start_job_run("ctr", "serve", workflow_run_id=latest, project="demo")
    store.update_job_run(attempt0.id, "KILLED")
    attempt1 = store.start_job_run("ctr", "serve", workflow_run_id=latest, attempt=1, project="demo")
    store.start_job_run("ctr", "prep", workflow_run_id=first, project="demo")
    store.update_workflow_run(first, "FINISHED")

    assert [r.id for r in store.list_workflow_runs()] == [latest, other, first]
    assert [r.id for r in store.list_workflow_runs(workflow="ctr")] == [latest, first]
    assert [r.id for r in store.list_workflow_runs(workflow="ctr", project="default")] == []
    assert [r.id for r in store.list_workflow_runs(limit=1)] == [latest]
    run = store.get_workflow_run(first)
    assert (run.workflow, run.project, run.state, run.properties, run.scheduler) == (
        "ctr", "demo", "FINISHED", {"cwd": "/w"}, None)
    assert run.ended_at is not None and store.get_workflow_run(latest).ended_at is None
    assert [(j.id, j.job, j.state, j.attempt) for j in store.list_job_runs(latest)] == [
        (attempt0.id, "serve", "KILLED", 0), (attempt1.id, "serve", "RUNNING", 1)]
    assert store.count_workflow_runs() == [("demo", "ctr", 2, latest), ("default", "etl", 1, other)]
    with pytest.raises(NotFoundError, match="workflow run 999 does not exist"):
        store.get_workflow_run(999)
