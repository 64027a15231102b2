"""Connections, transactions and schema upgrades of the one database that every service shares.

The event log, the scheduler's state and the metadata store live in one database (one URL), so the
helpers to reach it sit one floor below all three: ``events``, ``meta`` and ``scheduler`` import this
module, and it imports none of them. (The schema itself — ``meta/orm.py`` and the Alembic migrations in
``meta/migrations`` — describes every table; this module runs those migrations, found as package data,
without importing ``meta``.)

Why it looks like this:
- SQLite is used by several processes at once (a notebook kernel, job processes, the CLI). It runs in WAL
  mode with a busy timeout, and every write transaction starts with ``BEGIN IMMEDIATE`` so two writers
  queue for the lock up front instead of deadlocking on a read-to-write upgrade ("database is locked").
- Writers of one SQLite file *in one process* (the event server and the scheduler of a kernel or of
  ``aiflow server``) also queue on a lock of this process (:meth:`Database.write_lock`): SQLite makes a
  writer that finds the file locked sleep 1, 2, 5, 10, 20… ms before it looks again, which put tens of
  milliseconds on a scheduler decision now and then; a thread waiting on a Python lock is woken the
  moment the other commits.
- Writes go through :meth:`Database.transaction`, which retries the whole unit of work on a transient
  failure (lock timeout, serialization failure, a unique-key race), so callers never see those.
- The schema is owned by Alembic; a fresh or older database is upgraded on first use, under a lock so
  that two processes opening a new database at once do not both create it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from aiflow_notebook.core.errors import AIFlowError

T = TypeVar("T")

URL_EXAMPLES = "sqlite:////abs/path/meta.db, sqlite:///relative.db or postgresql+psycopg://user:pw@host:5432/db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_MAX_ATTEMPTS = 8
_PG_MIGRATION_LOCK = 0x41_49_46_4C  # "AIFL": advisory lock id held while migrating
MIGRATIONS = ("meta", "migrations")  # the Alembic environment, under the aiflow_notebook package


class DatabaseError(AIFlowError):
    """The database could not be used (bad URL, unreachable, not writable)."""


class DatabaseURLError(DatabaseError, ValueError):
    """The database URL is malformed, names an unknown database kind, or its driver is missing."""


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached or opened."""


def parse_url(url: str | URL) -> URL:
    """Validate a database URL and normalise it (``postgresql://`` uses psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"malformed database URL {str(url)!r}; expected for example {URL_EXAMPLES}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    return url.render_as_string(hide_password=True)


_SQLITE_WRITE_LOCKS: dict[str, threading.RLock] = {}
_SQLITE_WRITE_LOCKS_GUARD = threading.Lock()


def _sqlite_write_lock(path: str) -> threading.RLock:
    with _SQLITE_WRITE_LOCKS_GUARD:
        return _SQLITE_WRITE_LOCKS.setdefault(path, threading.RLock())


class Database:
    """Engines and sessions for one database URL."""

    def __init__(self, url: str | URL):
        self.url = parse_url(url)
        self.dialect = self.url.get_backend_name()
        in_memory = self.dialect == "sqlite" and self.url.database in (None, "", ":memory:")
        if self.dialect == "sqlite" and not in_memory:
            path = Path(self.url.database).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailableError(
                    f"cannot create the directory for the SQLite database {path}: {exc.strerror}. "
                    "Choose a writable location (AIFLOW_HOME or the URL)."
                ) from None
            self.url = self.url.set(database=str(path))
        if in_memory:
            # One shared connection, else each connection would see its own empty database.
            engine = self._create(poolclass=StaticPool, connect_args={"check_same_thread": False})
            self.write_engine = self.read_engine = engine
        else:
            self.write_engine = self._create(immediate=True)
            self.read_engine = self._create() if self.dialect == "sqlite" else self.write_engine
        self._write_lock = _sqlite_write_lock(self.url.database) if self.dialect == "sqlite" and not in_memory \
            else None
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    def _create(self, immediate: bool = False, **kwargs) -> Engine:
        if self.dialect == "postgresql":
            kwargs.setdefault("connect_args", {"connect_timeout": 10})
        try:
            engine = create_engine(self.url, **kwargs)
        except NoSuchModuleError:
            raise DatabaseURLError(
                f"unknown database kind {self.url.drivername!r} in {safe_url(self.url)!r}; "
                f"supported: sqlite, postgresql+psycopg, mysql+pymysql (e.g. {URL_EXAMPLES})"
            ) from None
        except ImportError as exc:
            raise DatabaseURLError(
                f"the driver for {self.url.drivername!r} is not installed ({exc.name}); "
                "for PostgreSQL: pip install 'aiflow-notebook[postgres]'"
            ) from None
        if self.dialect == "sqlite":
            _configure_sqlite(engine, immediate, _sqlite_busy_timeout_ms(self.url))
        return engine

    # --- units of work ---------------------------------------------------------------------------

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in one write transaction and commit; retry on transient failures.

        ``work`` may run more than once, so it must only touch the session (no side effects outside).
        """
        for attempt in range(_MAX_ATTEMPTS):
            try:
                with self.write_lock(), self._write_sessions() as session, session.begin():
                    return work(session)
            except (OperationalError, IntegrityError, DBAPIError) as exc:
                if attempt == _MAX_ATTEMPTS - 1 or not _is_transient(exc):
                    raise self._translate(exc) from exc
                time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def write_lock(self) -> AbstractContextManager:
        """Held around a write transaction: this process's writers of one SQLite file take turns here
        (woken at once) before SQLite's own lock (polled with sleeps); a no-op for other databases."""
        return self._write_lock if self._write_lock is not None else nullcontext()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; it sees one consistent snapshot for its duration."""
        try:
            with self._read_sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception):
        if isinstance(exc, OperationalError) and not _is_transient(exc):
            first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            return DatabaseUnavailableError(
                f"cannot use the metadata database {safe_url(self.url)}: {first_line}. "
                "Check that the server is running and the URL is right (AIFLOW_META_URL or url=...)."
            )
        return exc

    # --- schema ----------------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        try:
            with self.read_engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise self._translate(exc) from exc

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest), holding a cross-process lock."""
        try:
            with self.write_engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE holds the write lock
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                config = alembic_config(self.url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
        except OperationalError as exc:
            raise self._translate(exc) from exc

    def ensure_schema(self) -> None:
        """Upgrade the database to the newest schema unless it is already there."""
        if self.current_revision() != head_revision():
            self.upgrade("head")

    def dispose(self) -> None:
        self.write_engine.dispose()
        self.read_engine.dispose()


def alembic_config(url: URL | None = None) -> Config:
    config = Config()
    # Located from the root package: resources.files("aiflow_notebook.meta") would import the meta package.
    config.set_main_option("script_location", str(resources.files("aiflow_notebook").joinpath(*MIGRATIONS)))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


_head: str | None = None


def head_revision() -> str:
    global _head
    if _head is None:
        _head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return _head


def _sqlite_busy_timeout_ms(url: URL) -> int:
    """How long a connection waits for another one's lock: ``?timeout=SECONDS`` in the URL (pysqlite's own
    parameter), else :data:`SQLITE_BUSY_TIMEOUT_MS`."""
    timeout = url.query.get("timeout")
    if timeout is None:
        return SQLITE_BUSY_TIMEOUT_MS
    try:
        return max(0, int(float(timeout if isinstance(timeout, str) else timeout[0]) * 1000))
    except ValueError:
        raise DatabaseURLError(f"timeout={timeout!r} in {safe_url(url)!r} is not a number of seconds") from None


def _configure_sqlite(engine: Engine, immediate: bool, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """WAL + busy timeout on every connection; transactions begun by us (pysqlite's own are off)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _is_transient(exc: Exception) -> bool:
    """A failure that a retry of the same unit of work can cure."""
    message = str(getattr(exc, "orig", exc)).lower()
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(exc, IntegrityError):
        # A concurrent writer took the unique key we computed (the next version number, a new name).
        return "unique constraint" in message or sqlstate == "23505"
    return (
        "database is locked" in message
        or "database table is locked" in message
        or "busy" in message
        or sqlstate in ("40001", "40P01")  # PostgreSQL serialization failure, deadlock detected
    )
