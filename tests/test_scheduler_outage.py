"""Exactly-once across a database outage: a batch that cannot commit is decided again, never skipped.

The faults are real. SQLite: another connection holds the SQLite write lock (``BEGIN EXCLUSIVE``) for longer than
the scheduler's busy timeout (``?timeout=0.2`` in its URL), so its commits fail with "database is locked"
until the lock is released. PostgreSQL: the scheduler's server is shut down and started again. The event
bus keeps its log in a SQLite file of its own and goes on storing events.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.events import Event, EventClient, EventServer
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.sandbox.postgres import PostgresServer
from aiflow_notebook.scheduler import Scheduler, SchedulerClient
from aiflow_notebook.storage.blobs import LocalBlobStore
from aiflow_notebook.testing.processes import wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for

pytestmark = pytest.mark.slow


def note_start(context):
    with open(context.properties["log"], "a") as fh:
        fh.write("started\n")


def stay(context):
    while True:
        time.sleep(0.1)


@pytest.fixture
def parts(tmp_path):
    """An event bus on its own database; the scheduler's store on a SQLite file with a short busy timeout."""
    server = EventServer(f"sqlite:///{tmp_path / 'events.db'}").start()
    client = EventClient(server.url)
    meta_path = tmp_path / "meta.db"
    store = MetadataStore(f"sqlite:///{meta_path}?timeout=0.2")
    try:
        yield client, store, meta_path
    finally:
        client.close()
        store.close()
        server.stop()
        assert wait_no_process_left(cmdline=str(tmp_path / "home" / "runs")) == []


def _define(log: Path) -> None:
    with af.workflow("outage"):
        with af.job_config("keep"):  # keeps the run alive
            af.user_define_operation(stay, name="stay")
        with af.job_config("work"):
            af.user_define_operation(note_start, name="note", properties={"log": str(log)})
        af.action_on_event("work", key="go", event_type="GO")


class _Locked:
    """Another connection holding the database's write lock."""

    def __init__(self, path: Path):
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


def _commit_failed(caplog) -> bool:
    """The scheduler said a write failed (committing the event, or first a cursor move queued before it)."""
    return any("cannot " in r.getMessage() and "database is locked" in r.getMessage() for r in caplog.records)


def test_a_trigger_whose_commit_failed_is_decided_again_and_acted_on_once(parts, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="aiflow_notebook.scheduler")
    client, store, meta_path = parts
    log = tmp_path / "starts.txt"
    _define(log)
    scheduler = Scheduler(store, client, home=tmp_path / "home", blob_store=LocalBlobStore(tmp_path / "blobs"))
    scheduler.start()
    try:
        run = SchedulerClient(client, blob_store=scheduler.blobs).submit(af.compile("outage"))
        wait_for(lambda: run.jobs()["keep"] == "RUNNING", what="the run to start")

        lock = _Locked(meta_path)
        try:
            client.send_event(Event("go", "1", "GO"))
            wait_for(lambda: _commit_failed(caplog), timeout=30, what="the scheduler's commit to fail")
            time.sleep(0.5)  # it keeps failing while the lock is held: nothing may have started
            assert not log.exists()
        finally:
            lock.release()
        wait_for(lambda: log.exists(), timeout=30, what="the trigger to be acted on after the outage")
        wait_for(lambda: run.jobs()["work"] == "FINISHED", what="work to finish")  # (START of a running job: no-op)

        client.send_event(Event("go", "2", "GO"))  # the rule still works, from the committed state
        wait_for(lambda: log.read_text().count("started") == 2, what="the second trigger")
        assert run.stop() == "KILLED"  # barrier: handled after every action decided before it
        assert log.read_text().count("started") == 2
        starts = [e for e in run.job_events() if e.key == "outage.work" and e.value == "STARTING"]
        assert len(starts) == 2
    finally:
        scheduler.stop(kill_jobs=True)


def test_a_scheduler_stopped_during_the_outage_leaves_the_event_to_its_successor(parts, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="aiflow_notebook.scheduler")
    client, store, meta_path = parts
    log = tmp_path / "starts.txt"
    _define(log)
    blobs = LocalBlobStore(tmp_path / "blobs")
    first = Scheduler(store, client, home=tmp_path / "home", blob_store=blobs).start()
    second = None
    try:
        run = SchedulerClient(client, blob_store=blobs).submit(af.compile("outage"))
        wait_for(lambda: run.jobs()["keep"] == "RUNNING", what="the run to start")
        lock = _Locked(meta_path)
        try:
            client.send_event(Event("go", "1", "GO"))
            wait_for(lambda: _commit_failed(caplog), timeout=30, what="the scheduler's commit to fail")
            first.stop()  # gives up waiting: nothing of the batch took effect
            assert not first.alive
        finally:
            lock.release()
        assert not log.exists()

        second = Scheduler(store, client, home=tmp_path / "home", blob_store=blobs).start()
        wait_for(lambda: log.exists(), timeout=30, what="the successor to act on the trigger")
        assert run.stop() == "KILLED"
        assert log.read_text().count("started") == 1
    finally:
        first.stop(kill_jobs=True)
        if second is not None:
            second.stop(kill_jobs=True)


@pytest.mark.postgres
def test_a_trigger_during_a_postgresql_restart_is_acted_on_once_it_is_back(tmp_path, caplog):
    """The scheduler's PostgreSQL server is shut down (immediate mode, like a crash) and started again."""
    caplog.set_level(logging.WARNING, logger="aiflow_notebook.scheduler")
    pg = PostgresServer(durable=True).start()  # a crash of a non-durable server may lose commits
    server = EventServer(f"sqlite:///{tmp_path / 'events.db'}").start()
    client = EventClient(server.url)
    store = MetadataStore(pg.create_database("restart"))
    log = tmp_path / "starts.txt"
    _define(log)
    scheduler = Scheduler(store, client, home=tmp_path / "home", blob_store=LocalBlobStore(tmp_path / "blobs"))
    try:
        scheduler.start()
        run = SchedulerClient(client, blob_store=scheduler.blobs).submit(af.compile("outage"))
        wait_for(lambda: run.jobs()["keep"] == "RUNNING", what="the run to start")
        _pg_ctl(pg, "-m", "immediate", "-w", "stop")
        client.send_event(Event("go", "1", "GO"))
        wait_for(lambda: any("cannot " in r.getMessage() for r in caplog.records), timeout=30,
                 what="the scheduler's commit to fail")
        assert not log.exists()
        options = f"-p {pg.port} -k {pg.run_dir} -c listen_addresses=127.0.0.1"
        _pg_ctl(pg, "-o", options, "-l", str(pg.run_dir / "log"), "-w", "start")
        wait_for(lambda: log.exists(), timeout=60, what="the trigger to be acted on after the restart")
        assert run.stop() == "KILLED"
        assert log.read_text().count("started") == 1
    finally:
        scheduler.stop(kill_jobs=True)
        client.close()
        store.close()
        server.stop()
        pg.stop()
    assert wait_no_process_left(cmdline=str(tmp_path / "home" / "runs")) == []


def _pg_ctl(pg: PostgresServer, *args: str) -> None:
    cmd = [str(pg.bin_dir / "pg_ctl"), "-D", str(pg.data_dir), *args]
    if pg._as_root:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, cwd=pg.base)
