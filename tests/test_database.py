"""Database URLs, connection failures, migrations and concurrent writers."""

from __future__ import annotations

import multiprocessing
import socket
import sqlite3
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.meta import DatabaseUnavailableError, DatabaseURLError, MetadataStore
from aiflow_notebook.meta.orm import Base
from aiflow_notebook.storage.database import Database, head_revision


@pytest.mark.parametrize("url, message", [
    ("not a url", "malformed database URL 'not a url'"),
    ("oracle2000://scott@localhost/db", "unknown database kind 'oracle2000'"),
    ("mysql+nosuchdriver://u@h/db", r"unknown database kind 'mysql\+nosuchdriver'"),
])
def test_malformed_or_unknown_urls_are_refused(url, message):
    with pytest.raises(DatabaseURLError, match=message):
        MetadataStore(url)


def test_unreachable_database_says_so_quickly():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=rf"cannot use the metadata database .*127.0.0.1:{port}.*server is running"):
        MetadataStore(f"postgresql://postgres:secret@127.0.0.1:{port}/db")
    assert time.monotonic() - started < 15


def test_password_is_not_shown_in_errors():
    with pytest.raises(DatabaseUnavailableError) as info:
        MetadataStore(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db")
    assert "hunter2" not in str(info.value)


def test_sqlite_in_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseUnavailableError, match="cannot create the directory"):
        MetadataStore(f"sqlite:///{blocker}/sub/meta.db")


def test_orm_and_migrations_agree(meta_url):
    MetadataStore(meta_url).close()
    engine = create_engine(meta_url.replace("postgresql+psycopg", "postgresql+psycopg"))
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    engine.dispose()
    assert diffs == []


def test_upgrade_from_an_older_migration_keeps_rows(meta_url):
    db = Database(meta_url)
    db.upgrade("0001")
    assert db.current_revision() == "0001"
    with db.write_engine.begin() as conn:
        conn.execute(text("INSERT INTO model (name, created_at) VALUES ('legacy', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO model_version (model_id, version, uri, stage, created_at, updated_at) "
                          "SELECT id, 1, 'file:///old', 'VALIDATED', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
                          "FROM model WHERE name = 'legacy'"))
    db.dispose()
    with MetadataStore(meta_url) as store:  # upgrades on first use
        assert Database(meta_url).current_revision() == head_revision()
        assert store.get_latest_model_version("legacy").uri == "file:///old"
        assert store.register_model_version("legacy", uri="file:///new").version == 2
        store.register_dataset("d", uri="file:///d")  # tables of the newer migration work
        run = store.start_job_run("wf", "job")
        store.record_dataset_read(run, "d")


def _register_many(url: str, model: str, count: int, queue) -> None:
    try:
        with MetadataStore(url) as store:
            versions = [store.register_model_version(model, uri=f"u{i}").version for i in range(count)]
        queue.put(("ok", versions))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(("error", repr(exc)))


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_get_unique_gap_free_versions(meta_url, writers):
    with MetadataStore(meta_url) as store:
        store.register_model("ctr")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    per_writer = 60
    procs = [ctx.Process(target=_register_many, args=(meta_url, "ctr", per_writer, queue)) for _ in range(writers)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    errors = [r for status, r in results if status == "error"]
    assert errors == []
    seen = sorted(v for _, versions in results for v in versions)
    assert seen == list(range(1, writers * per_writer + 1))
    with MetadataStore(meta_url) as store:
        assert [v.version for v in store.list_model_versions("ctr")] == seen


def test_new_sqlite_database_opened_by_two_processes_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_register_many, args=(url, "m", 0, queue)) for _ in range(3)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [status for status, _ in results] == ["ok"] * 3, results
    assert sqlite3.connect(tmp_path / "fresh.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_closed_port_check_is_real():
    """Guard for the unreachable test above: a fresh free port really refuses connections."""
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", free_port()), timeout=2):
        pass
