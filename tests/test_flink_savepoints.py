"""Loss-free restarts of a streaming Flink job: stop-with-savepoint, resume from it (docs/streaming.md).

The job tags each record with its job run id (a value that differs per start). Records are written into
the monitored directory while it runs, between restarts; the output must hold every record exactly once,
and records written after a restart must be tagged by the restarted job.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.flink_program import stateful_operators
from aiflow_notebook.engines.flink_savepoints import (
    PROGRAM_FILE,
    resume_decision,
    savepoint_created,
    savepoint_deadline,
)
from aiflow_notebook.storage.part_files import read_lines
from aiflow_notebook.testing.waiting import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tagging function travels by value

JOB = "tagger"
START_TIMEOUT = 120  # a JVM start on a loaded 2-core machine


def tag(row):
    """Runs in the job process: the job run id tells which start processed the record."""
    return [row[0], int(os.environ["AIFLOW_JOB_RUN_ID"])]


def _define(workflow: str, data: Path) -> None:
    with af.workflow(workflow):
        with af.job_config(JOB, engine="flink", streaming=True):
            rows = af.read_dataset("numbers", uri=str(data / "in"), schema={"n": "int"})
            af.write_dataset(af.transform(rows, tag, name="tag"), "tagged", uri=str(data / "out"))


def _write(data: Path, name: str, numbers: range) -> None:
    """A new input file, appearing at once (a hidden temp file renamed: the source skips hidden files)."""
    folder = data / "in"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text("".join(f"{n}\n" for n in numbers))
    os.replace(tmp, folder / name)


def _records(data: Path) -> list[tuple[int, int]]:
    """(number, job run that wrote it) of every committed output line."""
    return [tuple(int(v) for v in line.split(",")) for line in sorted(read_lines(data / "out"))]


def _events(run, state: str) -> list[dict]:
    return [json.loads(e.context) for e in run.job_events() if e.key.endswith(f".{JOB}") and e.value == state]


def _starts(run) -> list[int]:
    return [context["job_run"] for context in _events(run, "STARTING")]


def _restart(run, starts_before: int) -> None:
    run.restart_job(JOB)
    wait_for(lambda: len(_starts(run)) == starts_before + 1 and run.jobs()[JOB] == "RUNNING",
             timeout=START_TIMEOUT, what=f"start {starts_before + 1} of {JOB} in run {run.run_id}")


def _phase(data: Path, run, phase: int, size: int, files: int = 3, prefix: str = "") -> range:
    """Write ``files`` files of phase ``phase`` (numbers phase*size ...); all but the last wait until the job
    committed some of the phase, so the last one (and the restart after it) falls while records are in flight."""
    numbers = range(phase * size, (phase + 1) * size)
    per_file = size // files
    for index in range(files):
        chunk = numbers[index * per_file:(index + 1) * per_file if index < files - 1 else size]
        _write(data, f"{prefix}p{phase}-{index}.csv", chunk)
        if index == files - 2:
            wait_for(lambda: any(n in numbers for n, _ in _records(data)), timeout=START_TIMEOUT,
                     what=f"the job to commit records of phase {phase}")
    return numbers


def _savepoint_dir(home: Path, workflow: str, run_id: int) -> Path:
    return home / "savepoints" / workflow / str(run_id) / JOB


@pytest.mark.slow
def test_three_restarts_write_every_record_exactly_once_and_later_records_carry_the_new_tag(tmp_path, aiflow_home):
    data, size, phases = tmp_path / "data", 75, 4  # N = 300 in 12 files
    (data / "in").mkdir(parents=True)
    _define("sp", data)
    run = af.submit("sp")
    try:
        wait_for(lambda: run.jobs()[JOB] == "RUNNING", timeout=START_TIMEOUT, what="the job to run")
        written = []
        for phase in range(phases):
            written.append(_phase(data, run, phase, size))
            if phase < phases - 1:
                _restart(run, phase + 1)  # right after the phase's last file: records are in flight
        wait_for(lambda: len(_records(data)) >= size * phases, timeout=START_TIMEOUT, what="every record")
        assert run.stop() == "KILLED"  # barrier: the final stop commits what is left; a duplicate shows now
        records = _records(data)
        assert sorted(n for n, _ in records) == list(range(size * phases))  # none missing, none twice
        starts = _starts(run)
        assert len(starts) == phases
        for phase, numbers in enumerate(written[1:], start=1):  # written after restart `phase`
            tags = {t for n, t in records if n in numbers}
            assert tags <= set(starts[phase:]) and starts[phase] in tags, (phase, tags, starts)

        store = af.default_store()
        killed = _events(run, "KILLED")
        assert [context["job_run"] for context in killed] == starts
        for index, context in enumerate(killed):
            savepoint = Path(context["savepoint"])
            assert _savepoint_dir(aiflow_home, "sp", run.run_id) in savepoint.parents
            assert store.get_job_run(context["job_run"]).savepoint == str(savepoint)
            # the newest two are kept, older ones deleted: weeks of restarts must not fill the disk
            assert (savepoint / "_metadata").is_file() == (index >= len(killed) - 2), (index, savepoint)
        assert len(list(_savepoint_dir(aiflow_home, "sp", run.run_id).glob("savepoint-*"))) == 2
        running = _events(run, "RUNNING")
        assert "resume_from" not in running[0]
        assert [context["resume_from"] for context in running[1:]] == [c["savepoint"] for c in killed[:-1]]
    finally:
        run.stop()


@pytest.mark.slow
def test_two_live_runs_of_one_workflow_restart_from_their_own_savepoints(tmp_path, aiflow_home):
    data, size = tmp_path / "data", 40
    (data / "in").mkdir(parents=True)
    _define("twins", data)
    first, second = af.submit("twins"), af.submit("twins")
    try:
        for run in (first, second):
            wait_for(lambda run=run: run.jobs()[JOB] == "RUNNING", timeout=START_TIMEOUT, what="both runs to run")
        _phase(data, first, 0, size, files=2)
        _restart(first, 1)
        _restart(second, 1)
        _phase(data, first, 1, size, files=2)
        _restart(first, 2)
        _write(data, "p2.csv", range(2 * size, 3 * size))
        runs_of = {job_run: run for run in (first, second) for job_run in _starts(run)}
        wait_for(lambda: len(_records(data)) >= 2 * 3 * size, timeout=START_TIMEOUT, what="every record, twice")
        assert first.stop() == "KILLED" and second.stop() == "KILLED"
        for run in (first, second):  # each run wrote each record exactly once
            numbers = sorted(n for n, job_run in _records(data) if runs_of[job_run] is run)
            assert numbers == list(range(3 * size)), run.run_id
            own = _savepoint_dir(aiflow_home, "twins", run.run_id)
            killed = _events(run, "KILLED")
            assert all(own in Path(context["savepoint"]).parents for context in killed)
            assert [c["resume_from"] for c in _events(run, "RUNNING")[1:]] == [c["savepoint"] for c in killed[:-1]]
        assert len(_starts(first)) == 3 and len(_starts(second)) == 2
    finally:
        first.stop()
        second.stop()


@pytest.mark.slow
def test_a_failed_savepoint_cancels_the_job_and_the_next_start_is_fresh(tmp_path, aiflow_home):
    data, size = tmp_path / "data", 20
    (data / "in").mkdir(parents=True)
    _define("faulty", data)
    run = af.submit("faulty")
    try:
        wait_for(lambda: run.jobs()[JOB] == "RUNNING", timeout=START_TIMEOUT, what="the job to run")
        _write(data, "p0.csv", range(size))
        wait_for(lambda: len(_records(data)) == size, timeout=START_TIMEOUT, what="the first records")
        # A real fault: the savepoint directory of this run's job is a regular file, so Flink cannot
        # create the savepoint in it.
        blocked = _savepoint_dir(aiflow_home, "faulty", run.run_id)
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_text("not a directory")
        _restart(run, 1)
        killed = _events(run, "KILLED")[0]
        assert killed["savepoint"] is None and killed["savepoint_error"], killed
        assert af.default_store().get_job_run(killed["job_run"]).savepoint is None
        log = Path(af.default_store().get_job_run(killed["job_run"]).log_uri).read_text()
        assert "savepoint failed" in log and "next start is fresh" in log
        assert "resume_from" not in _events(run, "RUNNING")[1]
        blocked.unlink()
        # Fresh: the new start reads the directory from the beginning, so the first records come again.
        second = _starts(run)[1]
        wait_for(lambda: sum(1 for _, t in _records(data) if t == second) == size, timeout=START_TIMEOUT,
                 what="the fresh start to read the old file again")
        assert sorted(n for n, _ in _records(data)) == sorted(list(range(size)) * 2)
    finally:
        run.stop()


@pytest.mark.slow
def test_a_streaming_job_on_a_standalone_cluster_restarts_from_its_savepoint(tmp_path, aiflow_home, flink_cluster):
    data, size = tmp_path / "data", 30
    (data / "in").mkdir(parents=True)
    with af.workflow("remote_sp"):
        with af.job_config(JOB, engine="flink", streaming=True, platform=f"flink://{flink_cluster.address}"):
            rows = af.read_dataset("numbers", uri=str(data / "in"), schema={"n": "int"})
            af.write_dataset(af.transform(rows, untagged, name="tag"), "tagged", uri=str(data / "out"))
    run = af.submit("remote_sp")
    try:
        wait_for(lambda: run.jobs()[JOB] == "RUNNING", timeout=START_TIMEOUT, what="the job to run")
        _phase(data, run, 0, size, files=2)
        _restart(run, 1)
        _write(data, "p1.csv", range(size, 2 * size))
        wait_for(lambda: len(_records(data)) >= 2 * size, timeout=START_TIMEOUT, what="every record")
        assert run.stop() == "KILLED"
        assert sorted(n for n, _ in _records(data)) == list(range(2 * size))
        killed = _events(run, "KILLED")
        assert all(_savepoint_dir(aiflow_home, "remote_sp", run.run_id) in Path(c["savepoint"]).parents
                   for c in killed)
        assert _events(run, "RUNNING")[1]["resume_from"] == killed[0]["savepoint"]
        ours = [job["state"] for job in flink_cluster.jobs() if job["name"] == f"remote_sp.{JOB}"]
        assert ours == ["FINISHED", "FINISHED"]  # stopped with a savepoint, not cancelled
    finally:
        run.stop()


def untagged(row):
    """On a cluster the TaskManagers run the functions, without the job process's environment."""
    return [row[0], 0]


# --- the decisions, without Flink -------------------------------------------------------------------


def _nodes(source_uri: str = "in", sink_uri: str = "out", sink: str = "write") -> list[dict]:
    return [{"name": "read", "kind": "read_dataset", "dataset": {"name": "a", "uri": source_uri}},
            {"name": "tag", "kind": "transform", "inputs": [["read", 0]]},
            {"name": sink, "kind": "write_dataset", "inputs": [["tag", 0]], "dataset": {"name": "b", "uri": sink_uri}}]


def test_stateful_operators_are_the_sources_and_sinks_by_node_name():
    assert stateful_operators(_nodes()) == {"source:read": "in", "sink:write": "out"}


def test_a_savepoint_is_used_only_when_its_sources_and_sinks_are_still_there(tmp_path):
    savepoint = tmp_path / "savepoint-1"
    savepoint.mkdir()
    (savepoint / PROGRAM_FILE).write_text(json.dumps(stateful_operators(_nodes())))
    assert resume_decision(None, stateful_operators(_nodes())) == (None, None)
    assert resume_decision(str(savepoint), stateful_operators(_nodes())) == (str(savepoint), None)
    added = {**stateful_operators(_nodes()), "sink:audit": "audit"}  # a new sink starts empty: still safe
    assert resume_decision(str(savepoint), added) == (str(savepoint), None)
    for edited in (_nodes(sink_uri="elsewhere"), _nodes(sink="renamed"), _nodes(source_uri="other")):
        path, note = resume_decision(str(savepoint), stateful_operators(edited))
        assert path is None and "graph changed" in note and "started fresh" in note
    path, note = resume_decision(str(tmp_path / "gone"), stateful_operators(_nodes()))
    assert path is None and "not usable" in note


def test_the_savepoint_deadline_leaves_time_to_cancel_within_the_stop_grace_period():
    assert savepoint_deadline({"job": {"properties": {}}}) == 7.0
    assert savepoint_deadline({"job": {"properties": {"stop_grace": 30}}}) == 27.0
    assert savepoint_deadline({"job": {"properties": {"stop_grace": 1}}}) == 0.5
    # A streaming Flink job gets a minute by default: a savepoint on a busy machine can outlast 10 s.
    assert savepoint_deadline({"job": {"engine": "flink", "streaming": True, "properties": {}}}) == 57.0
    assert savepoint_deadline({"job": {"engine": "flink", "streaming": True,
                                       "properties": {"stop_grace": 20}}}) == 17.0


def test_a_savepoint_complete_before_the_job_failed_while_stopping_is_kept():
    # Flink's message when the job fails after its stop-with-savepoint completed (seen under load)
    message = ("org.apache.flink.util.FlinkException: Stop with savepoint operation could not be completed.\n"
               "Caused by: org.apache.flink.runtime.scheduler.stopwithsavepoint.StopWithSavepointStoppingException: "
               "A savepoint has been created at: file:/home/a/savepoints/w/1/serve/savepoint-59ed0c-561d3de3cf58, but "
               "the corresponding job 59ed0c9c4457117251e86beac99c533d failed during stopping. The savepoint is "
               "consistent, but might have uncommitted transactions.")
    assert savepoint_created(message) == "/home/a/savepoints/w/1/serve/savepoint-59ed0c-561d3de3cf58"
    assert savepoint_created("java.io.IOException: Failed to create savepoint directory") is None


def test_pruning_keeps_the_newest_savepoints_and_never_deletes_outside_the_jobs_own_directory(tmp_path):
    from aiflow_notebook.scheduler.settle import prune_savepoints

    own = tmp_path / "savepoints" / "wf" / "7" / "serve"
    made = []
    for n in range(5):  # oldest first, as Flink writes them
        (own / f"savepoint-{n}" / "_metadata").parent.mkdir(parents=True)
        (own / f"savepoint-{n}" / "_metadata").write_text("m")
        made.append(own / f"savepoint-{n}")
    elsewhere = tmp_path / "elsewhere" / "savepoint-x"  # a path recorded outside the run's own directory
    elsewhere.mkdir(parents=True)
    not_a_savepoint = own / "data"
    not_a_savepoint.mkdir()
    recorded = [f"file:{made[4]}", str(made[3]), f"file://{made[2]}", str(elsewhere), str(not_a_savepoint),
                str(made[1]), str(made[0])]  # newest first, in the forms Flink reports

    assert prune_savepoints(recorded, own, 0) == [] and all(p.is_dir() for p in made)  # 0: keep every one
    deleted = prune_savepoints(recorded, own, 2)
    assert deleted == [made[2].resolve(), made[1].resolve(), made[0].resolve()]
    assert [p.is_dir() for p in made] == [False, False, False, True, True]
    assert elsewhere.is_dir() and not_a_savepoint.is_dir()
    assert prune_savepoints(recorded, own, 2) == []  # again: nothing left to delete
