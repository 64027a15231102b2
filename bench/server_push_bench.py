"""The server extension's share of "bus event → sidebar": a real ``jupyter server`` with the extension.

- **push**: events sent to the server's bus at a steady rate (default 100/s) by another process; figure =
  p50/p99/max of (arrival on ``/api/events/subscribe`` − send call time), in ms. The browser adds its
  rendering on top (the lab extension's benchmark measures the whole path).
- **rest**: ``GET /aiflow/api/runs`` and ``GET /aiflow/api/events?limit=100`` one after another; figure =
  p50/p99 ms.

    .venv/bin/python bench/server_push_bench.py [--rate 100] [--events 1000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import emit, percentile
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.server_extension import BUS_EVENT_SCHEMA_ID

BENCH = "server_push"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events per second for the push figure")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiflow-push-") as home:
        port, token = free_port(), secrets.token_hex(16)
        env = {**os.environ, "AIFLOW_HOME": home, "JUPYTER_RUNTIME_DIR": str(Path(home, "runtime")),
               "JUPYTER_CONFIG_DIR": str(Path(home, "config"))}
        env.pop("AIFLOW_EVENT_URL", None)
        env.pop("AIFLOW_SCHEDULER_URL", None)
        server = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser",
                                   "--allow-root", f"--port={port}", f"--ServerApp.token={token}",
                                   f"--ServerApp.root_dir={home}"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            asyncio.run(measure(args, port, token, Path(home)))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


async def measure(args, port: int, token: str, home: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()
    deadline = time.monotonic() + 60
    while True:  # the server is up once the API answers
        try:
            await http.fetch(f"{base}/aiflow/api/runs", headers=headers)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline:
                raise SystemExit("the jupyter server did not answer within 60 s") from None
            await asyncio.sleep(0.2)
    bus = next(p for p in (home / "sockets").glob("events-*.sock") if not p.name.endswith(".pub"))
    socket = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/api/events/subscribe", headers=headers))
    latencies: list[float] = []

    def send() -> None:  # its own thread and socket, paced
        client = EventClient(f"ipc://{bus}")
        start = time.monotonic()
        for i in range(args.events):
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            client.send_event(Event(key="bench.push", value=str(time.time()), event_type="BENCH"))
        client.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    end = time.monotonic() + args.events / args.rate + 60
    while len(latencies) < args.events and time.monotonic() < end:
        message = await asyncio.wait_for(socket.read_message(), max(0.1, end - time.monotonic()))
        data = json.loads(message)
        if data.get("schema_id") == BUS_EVENT_SCHEMA_ID and data["key"] == "bench.push":
            latencies.append((time.time() - float(data["value"])) * 1000)
    socket.close()
    sender.join(10)
    if os.environ.get("AIFLOW_BENCH_TRACE"):
        print([round(x) for x in latencies], file=sys.stderr)
    for q in (50, 99):
        emit(BENCH, f"push_p{q}", percentile(latencies, q), "ms", rate=args.rate, events=len(latencies))
    emit(BENCH, "push_max", max(latencies), "ms", rate=args.rate, events=len(latencies))
    for path in ("runs", "events?limit=100"):
        times = []
        for _ in range(args.requests):
            began = time.perf_counter()
            await http.fetch(f"{base}/aiflow/api/{path}", headers=headers)
            times.append((time.perf_counter() - began) * 1000)
        for q in (50, 99):
            emit(BENCH, f"rest_{path.split('?')[0]}_p{q}", percentile(times, q), "ms", requests=args.requests)


if __name__ == "__main__":
    main()
