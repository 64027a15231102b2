"""The durable, append-only event log in SQL (the ``event_log`` table of the metadata database).

The event server is the only writer: it numbers events itself (``version`` = the last one + 1) and appends
each group of concurrent sends in ONE transaction (group commit), so the cost of a commit is shared by
every event in the batch. SQLite runs in WAL mode with ``synchronous=NORMAL`` (set up by
:class:`~aiflow_notebook.storage.database.Database`): a committed batch survives a crash of any process, which is
the promise an acknowledgement makes.

The hot paths (append, page through events) use the DBAPI connection directly with hand-written,
portable SQL: SQLAlchemy's per-row and per-transaction bookkeeping cost more than the database itself
here. The schema still comes from the Alembic migrations (``Database.ensure_schema``), and the SQL uses
only positional parameters, standard clauses and unquoted names, so it runs on SQLite and PostgreSQL.

An ``EventLog`` belongs to one thread (the server's loop); it is not thread-safe.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from aiflow_notebook.core.waiting import polling
from aiflow_notebook.events.errors import EventServerError
from aiflow_notebook.events.event import EventFilter
from aiflow_notebook.storage.database import Database, safe_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Page:
    """Some events of a listing: ``json`` is a JSON array of rows in ``protocol.ROW_FIELDS`` order."""

    json: bytes
    count: int
    last_version: int  # 0 if empty
    more: bool  # the page was cut short by the limit or the byte budget: ask again after last_version

    def rows(self) -> list[list]:
        return json.loads(self.json)

# Column order of an appended row.
INSERT_COLUMNS = ("version", "event_key", "event_value", "event_type", "namespace", "sender", "context",
                  "create_time", "client_id", "seq")
# Column order of a returned row = protocol.ROW_FIELDS.
ROW_COLUMNS = ("version", "create_time", "event_key", "event_value", "event_type", "namespace", "sender", "context")
_PG_WRITER_LOCK = 0x41_46_45_56  # "AFEV": advisory lock held by the one server writing a PostgreSQL log
MAX_FILTER_KEYS = 10_000


class EventLog:
    """Append and query events of one database (a URL, or an open :class:`Database`)."""

    def __init__(self, url_or_db: str | Database):
        self._db = url_or_db if isinstance(url_or_db, Database) else Database(url_or_db)
        self._db.ensure_schema()
        self.dialect = self._db.dialect
        self._p = "?" if self._db.write_engine.dialect.paramstyle == "qmark" else "%s"
        self._insert = (f"INSERT INTO event_log ({', '.join(INSERT_COLUMNS)}) "
                        f"VALUES ({', '.join([self._p] * len(INSERT_COLUMNS))})")
        columns = ", ".join(ROW_COLUMNS)
        self._row_json = (f"json_build_array({columns})::text" if self.dialect == "postgresql"
                          else f"json_array({columns})")  # SQLite (and MySQL) spell it json_array
        dbapi = self._db.write_engine.dialect.loaded_dbapi
        self.IntegrityError = dbapi.IntegrityError
        # What a failing database raises through these raw connections (SQLAlchemy's wrapper, to be safe).
        self.DatabaseError = (dbapi.Error, DBAPIError)
        self._writer = None
        self._reader = None
        self._lock_file = None
        self._claimed = False
        self._checkpointer: _Checkpointer | None = None

    @property
    def url(self) -> str:
        return safe_url(self._db.url)

    # --- ownership -----------------------------------------------------------------------------------

    def claim_writer(self, wait: float = 3.0) -> None:
        """Make sure no other event server writes this log (versions come from one counter).

        SQLite: an exclusive ``flock`` on ``<db>.event-server.lock``; PostgreSQL: a session advisory lock.
        Both are released by the operating system or the database when the process dies, ``kill -9``
        included, so a restarted server can claim the log. A claim is retried for ``wait`` seconds (the
        database may take a moment to notice that the previous server's connection is gone).
        """
        for _ in polling(wait, 0.2):
            owner = self._try_claim()
            if owner is None:
                self._claimed = True
                return
        raise EventServerError(f"another event server ({owner}) already serves {self.url}; stop it first "
                               "or point this one at another database (--db)")

    def _try_claim(self) -> str | None:
        """None if claimed, else a description of the current owner."""
        if self.dialect == "sqlite":
            return self._claim_file()
        if self.dialect == "postgresql":
            return self._claim_advisory_lock()
        return None

    def _claim_file(self) -> str | None:
        """SQLite: an exclusive ``flock`` on ``<db>.event-server.lock``, which holds the owner's pid."""
        database = self._db.url.database
        if not database or database == ":memory:":
            return None
        import fcntl

        path = Path(database).with_name(Path(database).name + ".event-server.lock")
        handle = open(path, "a+")  # noqa: SIM115 - held open for the server's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            return f"pid {owner}"
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle
        return None

    def _claim_advisory_lock(self) -> str | None:
        """PostgreSQL: a session advisory lock on the writer's connection."""
        conn = self._writer or self._db.write_engine.raw_connection()
        self._writer = conn
        cursor = conn.cursor()
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (_PG_WRITER_LOCK,))
        (taken,) = cursor.fetchone()
        conn.commit()
        return None if taken else "advisory lock held"

    def checkpoint_in_background(self, interval: float = 1.0) -> None:
        """SQLite: move WAL checkpoints off the commit path, into a thread of their own.

        By default the committing connection checkpoints whenever the WAL passes 1,000 pages, and with
        ``synchronous=NORMAL`` a checkpoint fsyncs the WAL and the database: a commit that happens to do it
        takes milliseconds instead of tens of microseconds (seen as the one slow event in every few
        hundred). Here the writer never checkpoints; a thread runs a PASSIVE checkpoint (which waits for
        no one) every ``interval`` seconds while events arrive. Durability is unchanged: a commit is in
        the WAL either way.
        """
        if self.dialect != "sqlite" or not self._db.url.database or self._db.url.database == ":memory:":
            return
        self._write_conn().execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = _Checkpointer(self._db, interval)
        self._checkpointer.start()

    # --- writing -------------------------------------------------------------------------------------

    def last_version(self) -> int:
        """The highest stored version (0 for an empty log)."""
        return self._scalar("SELECT max(version) FROM event_log", ()) or 0

    def append(self, rows: list[tuple]) -> None:
        """Store ``rows`` (in :data:`INSERT_COLUMNS` order) in one transaction, or none of them."""
        conn = self._write_conn()
        with self._db.write_lock():  # this process's other writers of the file wait here, not in SQLite
            try:
                if self.dialect == "sqlite":
                    conn.execute("BEGIN IMMEDIATE")  # the engine runs sqlite3 in autocommit mode
                cursor = conn.cursor()
                cursor.executemany(self._insert, rows)
                conn.commit()
            except BaseException:
                self._rollback()
                raise
        if self._checkpointer is not None:
            self._checkpointer.pending.set()

    def _rollback(self) -> None:
        try:
            if self._writer is not None:
                self._writer.rollback()
        except self.DatabaseError:
            self.reset()

    # --- reading -------------------------------------------------------------------------------------

    def query(self, flt: EventFilter, limit: int, max_bytes: int = 8 << 20) -> Page:
        """The oldest ``limit`` matching events after ``flt.since_version``, as one JSON array of rows.

        The database writes each row's JSON itself (``json_array``; PostgreSQL ``json_build_array``), which
        halves the server's cost of a catch-up compared with fetching values into Python and encoding them
        there. The page also stops once its JSON reaches ``max_bytes``, so pages of large events stay
        bounded in memory (at least one event is always returned).
        """
        where, params = self._where(flt)
        sql = f"SELECT version, {self._row_json} FROM event_log{where} ORDER BY version LIMIT {int(limit)}"
        with self._reading(sql, params) as cursor:
            texts, last, cut = _page_of(cursor, max_bytes)
        body = ("[" + ",".join(texts) + "]").encode()
        return Page(body, len(texts), last, cut or len(texts) >= limit)

    def latest_version(self, flt: EventFilter) -> int:
        """The highest version matching ``flt`` (0 if none)."""
        where, params = self._where(flt)
        return self._scalar(f"SELECT max(version) FROM event_log{where}", params) or 0

    def client_sends(self, client_id: str, window: int) -> tuple[int, list[tuple[int, int, int]]]:
        """A client's highest sequence number and its last ``window`` sends as (seq, version, create_time)."""
        p = self._p
        last_seq = self._scalar(f"SELECT max(seq) FROM event_log WHERE client_id = {p}", (client_id,)) or 0
        rows = self._read(f"SELECT seq, version, create_time FROM event_log WHERE client_id = {p} AND seq > {p}",
                          (client_id, last_seq - window))
        return last_seq, [tuple(r) for r in rows]

    def find_send(self, client_id: str, seq: int) -> tuple[int, int] | None:
        """(version, create_time) of the event stored by send ``(client_id, seq)``, if any."""
        p = self._p
        rows = self._read(f"SELECT version, create_time FROM event_log WHERE client_id = {p} AND seq = {p}",
                          (client_id, seq))
        return tuple(rows[0]) if rows else None

    def _where(self, flt: EventFilter) -> tuple[str, list]:
        p = self._p
        clauses, params = [], []

        def where(clause: str, *values) -> None:
            clauses.append(clause)
            params.extend(values)

        if flt.since_version:
            where(f"version > {p}", flt.since_version)
        if flt.until_version is not None:
            where(f"version <= {p}", flt.until_version)
        if flt.keys is not None:
            if len(flt.keys) > MAX_FILTER_KEYS:
                raise ValueError(f"a filter may name at most {MAX_FILTER_KEYS} keys, got {len(flt.keys)}")
            keys = sorted(flt.keys)
            where(f"event_key = {p}" if len(keys) == 1 else f"event_key IN ({', '.join([p] * len(keys))})", *keys)
        for column, value in (("namespace", flt.namespace), ("event_type", flt.event_type), ("sender", flt.sender)):
            if value is not None:
                where(f"{column} = {p}", value)
        if flt.since_time is not None:
            where(f"create_time >= {p}", flt.since_time)
        if flt.until_time is not None:
            where(f"create_time < {p}", flt.until_time)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _scalar(self, sql: str, params) -> int | None:
        rows = self._read(sql, params)
        return rows[0][0] if rows else None

    def _read(self, sql: str, params) -> list:
        with self._reading(sql, params) as cursor:
            return cursor.fetchall()

    @contextmanager
    def _reading(self, sql: str, params) -> Iterator:
        """A cursor over ``sql``'s result; afterwards no snapshot is held between requests, and a failure
        drops the reading connection."""
        conn = self._read_conn()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, tuple(params))
            yield cursor
            cursor.close()
            if self.dialect != "sqlite":
                conn.rollback()  # end the implicit transaction
        except BaseException:
            self._reset_reader()
            raise

    # --- connections ---------------------------------------------------------------------------------

    def _write_conn(self):
        if self._writer is None:
            self._writer = self._db.write_engine.raw_connection()
            if self._claimed and self.dialect == "postgresql" and self._try_claim() is not None:
                self.reset()  # the advisory lock went with the old connection, and someone else has it now
                raise EventServerError(f"another event server took over {self.url}")
        return self._writer

    def _read_conn(self):
        if self._reader is None:
            self._reader = self._db.read_engine.raw_connection()
        return self._reader

    def _reset_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.invalidate()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                log.debug("closing a broken read connection failed", exc_info=True)

    def reset(self) -> None:
        """Drop both connections (after a database error); the next call reconnects."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.invalidate()
            except Exception:  # noqa: BLE001
                log.debug("closing a broken write connection failed", exc_info=True)
        self._reset_reader()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for conn in (self._writer, self._reader):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    log.debug("closing a connection failed", exc_info=True)
        self._writer = self._reader = None
        self._db.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _page_of(cursor, max_bytes: int) -> tuple[list[str], int, bool]:
    """The JSON texts of the rows ``cursor`` gives, until they reach ``max_bytes`` (one row at least); the
    last version read; whether the budget cut the page short."""
    texts: list[str] = []
    last, size, cut = 0, 0, False
    chunk_rows = 64  # then sized to what is left of the budget, so big events are never over-read
    while not cut:
        chunk = cursor.fetchmany(chunk_rows)
        if not chunk:
            break
        chunk_texts = [row[1] for row in chunk]
        chunk_size = sum(map(len, chunk_texts))
        if size + chunk_size >= max_bytes:
            for i, text in enumerate(chunk_texts):
                size += len(text)
                if size >= max_bytes or i == len(chunk_texts) - 1:
                    chunk, chunk_texts, cut = chunk[:i + 1], chunk_texts[:i + 1], True
                    break
        else:
            size += chunk_size
            average = max(1, chunk_size // len(chunk))
            chunk_rows = max(1, min(4096, (max_bytes - size) // average))
        texts.extend(chunk_texts)
        last = chunk[-1][0]
    return texts, last, cut


class _Checkpointer(threading.Thread):
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection when the log has grown."""

    def __init__(self, db: Database, interval: float):
        super().__init__(name="aiflow-event-log-checkpoint", daemon=True)
        self._db = db
        self.interval = interval
        self.pending = threading.Event()  # set by every commit
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = self._db.read_engine.raw_connection()
        try:
            while not self._stopping.wait(self.interval):
                if self.pending.is_set():
                    self.pending.clear()
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except Exception as exc:  # noqa: BLE001 - the next one will try again
                        log.warning("WAL checkpoint of the event log failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)
