"""Notebook panel benchmark (issue 10).

    .venv/bin/python bench/panel_bench.py [--runs 3] [--seconds 10] [--cells 200]

One JSON line per figure, the median over --runs runs, each in a fresh AIFLOW_HOME (embedded bus):
- update: an EventPanel follows one key while this process sends events at 100/s for --seconds; figure =
  p50/p99 of (the panel's ``events`` trait set with the event) − (the send call), in ms. The panel
  coalesces to at most 10 updates/s, so an event that arrives just after an update waits up to 100 ms.
- kernel: a real kernel (jupyter_client) shows ``%aiflow events`` while another process sends 1,000
  events/s to its bus; figure = p50/p99 round trip of a trivial cell (``1 + 1``: execute request → reply),
  over --cells cells, beside the same with no panel open (the sender still running).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import percentile

REPO = Path(__file__).resolve().parents[1]
SENDER = """
import sys, time
from aiflow_notebook.events import Event, EventClient
url, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with EventClient(url) as client:
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        if due > sent:
            client.send_events([Event("bench.k%d" % (i % 10), "x" * 100, "BENCH") for i in range(sent, due)])
            sent = due
        time.sleep(0.005)
"""


def emit(metric: str, value: float, unit: str, **extra) -> None:
    benchlib.emit("panels", metric, value, unit, **extra)


def update_latency(seconds: float) -> list[float]:
    """Event send → EventPanel trait update, at 100 events/s (ms)."""
    from aiflow_notebook.events import Event, EventClient
    from aiflow_notebook.testing.sdk import reset_sdk
    from aiflow_notebook.widgets import EventPanel

    panel = EventPanel(key="bench.k0", limit=200)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    seen: set[str] = set()

    def on_events(change) -> None:
        now = time.perf_counter()
        for event in change["new"]:
            if event["value"] in sent and event["value"] not in seen:
                seen.add(event["value"])
                latencies.append((now - sent[event["value"]]) * 1000)

    panel.observe(on_events, "events")
    panel._follower.listener.wait_ready(30)
    client = EventClient.from_environment()
    try:
        start = time.perf_counter()
        for i in range(int(seconds * 100)):
            time.sleep(max(0.0, start + i / 100 - time.perf_counter()))
            value = f"{i:06d}"
            sent[value] = time.perf_counter()
            client.send_event(Event("bench.k0", value, "BENCH"))
        deadline = time.monotonic() + 10
        while len(latencies) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
        panel.close()
        reset_sdk()
    return latencies


def kernel_round_trips(cells: int, with_panel: bool) -> list[float]:
    """Trivial cell round trips (ms) in a real kernel while another process sends 1,000 events/s."""
    from jupyter_client import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO))
    client = manager.client()
    client.start_channels()
    sender = None
    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive("%load_ext kernel_magics", timeout=60)
        if with_panel:
            client.execute_interactive("%aiflow events --limit 50", timeout=60, output_hook=lambda msg: None)
        else:
            client.execute_interactive("import aiflow_notebook.session.submit as s; _ = s.event_bus()", timeout=60)
        url = []
        client.execute_interactive("import os; print(os.environ['AIFLOW_EVENT_URL'])", timeout=60,
                                   output_hook=lambda msg: url.append(msg["content"].get("text", "")))
        sender = subprocess.Popen([sys.executable, "-c", SENDER, "".join(url).strip(), "1000", "600"],
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(2)  # the panel is busy following by now
        trips = []
        for _ in range(cells):
            started = time.perf_counter()
            reply = client.execute_interactive("1 + 1", timeout=30, output_hook=lambda msg: None)
            trips.append((time.perf_counter() - started) * 1000)
            assert reply["content"]["status"] == "ok"
            time.sleep(0.02)
        return trips
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
        client.stop_channels()
        manager.shutdown_kernel(now=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--panel-rate", type=float, default=None,
                        help="updates/s a panel may make (default: aiflow_notebook.widgets.follow.RATE, 10)")
    parser.add_argument("--skip-kernel", action="store_true", help="only the update figure")
    args = parser.parse_args()
    if args.panel_rate:
        import aiflow_notebook.widgets.follow as follow

        follow.RATE = args.panel_rate
    results: dict[str, list[float]] = {}

    def keep(metric: str, value: float) -> None:
        results.setdefault(metric, []).append(value)

    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            os.environ["AIFLOW_HOME"] = home
            os.environ.pop("AIFLOW_EVENT_URL", None)
            latencies = update_latency(args.seconds)
            keep("update_p50", percentile(latencies, 50))
            keep("update_p99", percentile(latencies, 99))
            keep("update_received", len(latencies))
        for with_panel in () if args.skip_kernel else (False, True):
            with tempfile.TemporaryDirectory() as home:
                os.environ["AIFLOW_HOME"] = home
                trips = kernel_round_trips(args.cells, with_panel)
                name = "cell_with_panel" if with_panel else "cell_without_panel"
                keep(f"{name}_p50", percentile(trips, 50))
                keep(f"{name}_p99", percentile(trips, 99))
    for metric, values in results.items():
        unit = "events" if metric == "update_received" else "ms"
        extra = {"panel_rate": args.panel_rate} if args.panel_rate else {}
        emit(metric, statistics.median(values), unit, runs=args.runs,
             rate="100/s" if metric.startswith("update") else "1000/s", **extra)


if __name__ == "__main__":
    main()
