"""Event bus benchmark (../shared/BENCHMARKS.md, "Event bus").

    .venv/bin/python bench/event_bench.py [--runs 3] [--only send,latency,burst,catchup] [--postgres]

The server is a real ``aiflow server start`` process on 127.0.0.1 (TCP) with a durable SQLite log in a
temporary directory, a fresh database per configuration. Events: value of 100 bytes, keys bench.k0 ..
bench.k9 round-robin, type BENCH. Prints one JSON line per figure: the median of --runs runs.

- send: acknowledged (durably stored) events/s. Sequential: 5,000 events by 1 client, then by 4 threads
  (one shared client) and by 4 processes, 5,000 each; every send waits for its ack. Pipelined: the same
  with ``send_events(window=64)``: up to 64 sends in flight per client, each acked after its commit.
- latency: one listener on one key (in this process), a sender at a steady 200/s and 1,000/s for 500
  events; (callback time - send call time) p50/p99/max in ms.
- burst: 30 trials of 5 events sent back-to-back to a live listener: time to the last delivery (p50,
  max) and trials over 1 s (stalls).
- catch-up: ``list_events(since_version=0)`` of 5,000 and 100,000 events (ms and events/s), and a
  listener replaying 100,000 from version 0. The log is filled directly through ``EventLog`` first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from itertools import count
from pathlib import Path

from benchlib import emit, percentile

from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.events.log import EventLog
from aiflow_notebook.testing.event_server import EventServerProcess

VALUE = "v" * 100
_names = count()




def events(n: int, offset: int = 0) -> list[Event]:
    return [Event(f"bench.k{(offset + i) % 10}", VALUE, "BENCH") for i in range(n)]


class Server:
    """A fresh database and server process per configuration."""

    def __init__(self, tmp: Path, db_url: str | None = None):
        self.db_url = db_url or f"sqlite:///{tmp / f'bench{next(_names)}.db'}"
        self.process = EventServerProcess(self.db_url)

    def __enter__(self) -> EventServerProcess:
        proc = self.process.start()
        with EventClient(proc.url) as warm:
            warm.latest_version()
        return proc

    def __exit__(self, *exc) -> None:
        self.process.stop()


# --- send ------------------------------------------------------------------------------------------


def _send_all(client: EventClient, n: int, pipelined: bool) -> None:
    if pipelined:
        for start in range(0, n, 1000):
            client.send_events(events(min(1000, n - start), start), window=64)
    else:
        for event in events(n):
            client.send_event(event)


def _send_process(url: str, n: int, pipelined: bool, barrier, queue) -> None:
    with EventClient(url) as client:
        client.latest_version()  # connect and HELLO before the clock starts
        client._hello()
        barrier.wait()
        started = time.perf_counter()
        _send_all(client, n, pipelined)
        queue.put((started, time.perf_counter()))


def send_rate(tmp: Path, mode: str, n: int, pipelined: bool) -> float:
    with Server(tmp) as server:
        if mode == "1client":
            with EventClient(server.url) as client:
                client._hello()
                started = time.perf_counter()
                _send_all(client, n, pipelined)
                elapsed = time.perf_counter() - started
            total = n
        elif mode == "4threads":
            with EventClient(server.url) as client:
                client._hello()
                threads = [threading.Thread(target=_send_all, args=(client, n, pipelined)) for _ in range(4)]
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - started
            total = 4 * n
        else:
            ctx = multiprocessing.get_context("spawn")
            barrier, queue = ctx.Barrier(4), ctx.Queue()
            procs = [ctx.Process(target=_send_process, args=(server.url, n, pipelined, barrier, queue))
                     for _ in range(4)]
            for p in procs:
                p.start()
            spans = [queue.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
            elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
            total = 4 * n
        with EventClient(server.url) as check:
            assert check.latest_version() == total, "every acked event stored once"
        return total / elapsed


# --- latency and burst -----------------------------------------------------------------------------


def latencies_ms(tmp: Path, rate: float, n: int) -> list[float]:
    with Server(tmp) as server, EventClient(server.url) as client:
        sent: dict[str, float] = {}
        seen: list[float] = []
        done = threading.Event()

        def on_event(event: Event) -> None:
            seen.append((time.perf_counter() - sent[event.value]) * 1000)
            if len(seen) == n:
                done.set()

        listener = client.listen("bench.k0", since_version=client.latest_version(), callback=on_event)
        assert listener.wait_ready(30)
        start = time.perf_counter()
        for i in range(n):
            due = start + i / rate
            while (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            value = f"{i}:{VALUE}"
            sent[value] = time.perf_counter()
            client.send_event(Event("bench.k0", value, "BENCH"))
        assert done.wait(60), f"only {len(seen)} of {n} delivered"
        listener.stop()
        return seen


def burst_ms(tmp: Path, trials: int, size: int) -> list[float]:
    with Server(tmp) as server, EventClient(server.url) as client:
        arrived = threading.Semaphore(0)
        listener = client.listen("bench.k0", since_version=client.latest_version(), callback=lambda e: arrived.release())
        assert listener.wait_ready(30)
        times = []
        for _ in range(trials):
            time.sleep(0.05)
            started = time.perf_counter()
            for event in events(size, 0):
                client.send_event(Event("bench.k0", event.value, "BENCH"))
            for _ in range(size):
                assert arrived.acquire(timeout=30)
            times.append((time.perf_counter() - started) * 1000)
        listener.stop()
        return times


# --- catch-up --------------------------------------------------------------------------------------


def fill(db_url: str, n: int) -> None:
    log = EventLog(db_url)
    now = int(time.time() * 1000)
    for start in range(0, n, 10_000):
        log.append([(v, f"bench.k{v % 10}", VALUE, "BENCH", "default", None, None, now, "filler", v)
                    for v in range(start + 1, min(n, start + 10_000) + 1)])
    log.close()


def catch_up(tmp: Path, n: int) -> tuple[float, float]:
    """(list_events ms, listener replay ms) for ``n`` stored events."""
    server = Server(tmp)
    fill(server.db_url, n)
    with server as proc, EventClient(proc.url) as client:
        started = time.perf_counter()
        listed = client.list_events(since_version=0)
        list_ms = (time.perf_counter() - started) * 1000
        assert len(listed) == n and listed[-1].version == n
        done = threading.Event()
        got = [0]

        def on_event(event: Event) -> None:
            got[0] += 1
            if got[0] == n:
                done.set()

        started = time.perf_counter()
        listener = client.listen("*", since_version=0, callback=on_event)
        assert done.wait(120)
        replay_ms = (time.perf_counter() - started) * 1000
        listener.stop()
        return list_ms, replay_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="send,latency,burst,catchup")
    parser.add_argument("--sends", type=int, default=5000, help="events per sender")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    runs = range(args.runs)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "send" in parts:
            for pipelined in (False, True):
                for mode in ("1client", "4threads", "4procs"):
                    rates = [send_rate(tmp, mode, args.sends, pipelined) for _ in runs]
                    emit("events", f"send_{'pipelined' if pipelined else 'sequential'}_{mode}",
                         statistics.median(rates), "events/s", runs=[round(r) for r in rates])
        if "latency" in parts:
            for rate in (200, 1000):
                figures = {"p50": [], "p99": [], "max": []}
                for _ in runs:
                    times = latencies_ms(tmp, rate, 500)
                    figures["p50"].append(percentile(times, 50))
                    figures["p99"].append(percentile(times, 99))
                    figures["max"].append(max(times))
                for stat, values in figures.items():
                    emit("events", f"latency_{rate}per_s_{stat}", statistics.median(values), "ms",
                         runs=[round(v, 3) for v in values])
        if "burst" in parts:
            p50s, maxes, stalls = [], [], []
            for _ in runs:
                times = burst_ms(tmp, 30, 5)
                p50s.append(percentile(times, 50))
                maxes.append(max(times))
                stalls.append(sum(t > 1000 for t in times))
            emit("events", "burst_p50", statistics.median(p50s), "ms", runs=[round(v, 3) for v in p50s])
            emit("events", "burst_max", statistics.median(maxes), "ms", runs=[round(v, 3) for v in maxes])
            emit("events", "burst_stalls", statistics.median(stalls), "trials of 30", runs=stalls)
        if "catchup" in parts:
            for n in (5_000, 100_000):
                lists, replays = [], []
                for _ in runs:
                    list_ms, replay_ms = catch_up(tmp, n)
                    lists.append(list_ms)
                    replays.append(replay_ms)
                emit("events", f"list_{n}_ms", statistics.median(lists), "ms", runs=[round(v, 1) for v in lists])
                emit("events", f"list_{n}_rate", n / (statistics.median(lists) / 1000), "events/s")
                emit("events", f"replay_{n}_rate", n / (statistics.median(replays) / 1000), "events/s",
                     runs=[round(v, 1) for v in replays])


if __name__ == "__main__":
    main()
