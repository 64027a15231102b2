"""The event log's database goes away and comes back: sends wait and retry, nothing is lost or doubled.

The fault is real: the PostgreSQL server under the event server is shut down (immediate mode, like a
crash) and started again on the same data directory and port.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.sandbox.postgres import PostgresServer
from aiflow_notebook.testing.event_server import EventServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(180)]


def _pg_ctl(pg: PostgresServer, *args: str) -> None:
    cmd = [str(pg.bin_dir / "pg_ctl"), "-D", str(pg.data_dir), *args]
    if pg._as_root:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, cwd=pg.base)


def test_sends_survive_a_database_restart():
    pg = PostgresServer(durable=True).start()  # a crash of a non-durable server may lose commits
    try:
        url = pg.create_database("outage")
        with EventServerProcess(url) as server, EventClient(server.url, deadline=60) as client:
            heard = []
            listener = client.listen("k", callback=heard.append)
            assert listener.wait_ready(30)
            client.send_events([Event("k", f"before {i}") for i in range(10)])
            _pg_ctl(pg, "-m", "immediate", "-w", "stop")
            results, errors = [], []

            def send_during_outage() -> None:
                try:
                    results.extend(client.send_events([Event("k", f"during {i}") for i in range(5)]))
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            sender = threading.Thread(target=send_during_outage)
            sender.start()
            time.sleep(2)
            assert sender.is_alive() and not results, "nothing can be acknowledged while the database is down"
            options = f"-p {pg.port} -k {pg.run_dir} -c listen_addresses=127.0.0.1"
            _pg_ctl(pg, "-o", options, "-l", str(pg.run_dir / "log"), "-w", "start")
            sender.join(60)
            assert not errors and len(results) == 5
            stored = client.list_events("k")
            assert [e.value for e in stored[:10]] == [f"before {i}" for i in range(10)]
            # retried sends of one send_events call may be stored in another order, but each exactly once
            assert sorted(e.value for e in stored[10:]) == [f"during {i}" for i in range(5)]
            assert [e.version for e in stored] == list(range(1, 16))
            end = time.monotonic() + 20
            while len(heard) < 15 and time.monotonic() < end:
                time.sleep(0.05)
            assert [e.version for e in heard] == list(range(1, 16))
            listener.stop()
            assert server.process.poll() is None
            assert "unavailable" in server.log()
    finally:
        pg.stop()
