"""The scheduler's database calls wait out an outage (a real SQLite lock held by another connection)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.scheduler.durable import DatabaseWaitTimeout, SchedulerStopped, call_durably
from aiflow_notebook.storage.database import Database


@pytest.fixture
def locked(tmp_path):
    """A SQLite database with a table, and a way to hold its write lock from another connection."""
    path = tmp_path / "d.db"
    db = Database(f"sqlite:///{path}?timeout=0.05")
    db.transaction(lambda s: s.execute(text("CREATE TABLE t (x INTEGER)")))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield db, holder
    holder.close()
    db.dispose()


def insert(db: Database, value: int):
    return lambda: db.transaction(lambda s: s.execute(text("INSERT INTO t VALUES (:x)"), {"x": value}))


def rows(db: Database) -> list[int]:
    with db.reading() as session:
        return [r[0] for r in session.execute(text("SELECT x FROM t ORDER BY x"))]


def test_a_write_blocked_by_a_lock_succeeds_once_the_lock_is_released(locked):
    db, holder = locked
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.5, lambda: holder.execute("ROLLBACK")).start()
    started = time.monotonic()
    call_durably(insert(db, 1), "insert", threading.Event())
    assert time.monotonic() - started >= 1.4
    assert rows(db) == [1]


def test_a_deadline_ends_the_wait_naming_what_waited(locked):
    db, holder = locked
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(DatabaseWaitTimeout, match=r"could not insert the row .*database is locked"):
        call_durably(insert(db, 1), "insert the row", threading.Event(), deadline=Deadline(1))
    holder.execute("ROLLBACK")
    assert rows(db) == []


def test_stopping_ends_the_wait_and_nothing_took_effect(locked):
    db, holder = locked
    holder.execute("BEGIN EXCLUSIVE")
    stopped = threading.Event()
    threading.Timer(0.5, stopped.set).start()
    with pytest.raises(SchedulerStopped):
        call_durably(insert(db, 1), "insert", stopped)
    holder.execute("ROLLBACK")
    assert rows(db) == []


def test_an_error_a_retry_cannot_cure_is_raised_at_once(locked):
    db, _ = locked
    started = time.monotonic()
    with pytest.raises(Exception, match="no such table"):
        call_durably(lambda: db.transaction(lambda s: s.execute(text("INSERT INTO missing VALUES (1)"))),
                     "insert", threading.Event())
    assert time.monotonic() - started < 1
