"""Sidebar benchmark: bus event → the JupyterLab sidebar's DOM shows it (issue 10; target p99 ≤ 500 ms).

    .venv/bin/python bench/sidebar_bench.py [--runs 3] [--events 200] [--rate 20]

A real chain, nothing mocked: an `aiflow server` (event bus, SQLite) on a free loopback port; a real
`jupyter lab` whose server extension follows that bus and forwards each event into jupyter_server's
event bus (WebSocket); headless Debian Chromium with the lab extension's sidebar open. This process
sends events (unique keys) at a steady --rate; a MutationObserver in the page stamps the moment each
event's row appears in the sidebar. Figure: p50/p99/max of (row appears − send call), ms, the median
over --runs runs (each with its own server, JupyterLab and browser). Both clocks are this machine's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import emit, percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiflow_notebook.events import Event, EventClient  # noqa: E402
from aiflow_notebook.testing.browser import JupyterLab, chromium_version, launch_chromium  # noqa: E402
from aiflow_notebook.testing.event_server import EventServerProcess  # noqa: E402
from aiflow_notebook.testing.waiting import wait_for  # noqa: E402

STAMP_ROWS = """() => {
  window.__seen = {};
  const stamp = () => {
    const now = Date.now();
    for (const li of document.querySelectorAll('#aiflow-sidebar li.aiflow-event[data-key^="bench."]')) {
      const key = li.getAttribute('data-key');
      if (!(key in window.__seen)) window.__seen[key] = now;
    }
  };
  new MutationObserver(stamp).observe(document.querySelector('#aiflow-sidebar'), {subtree: true, childList: true});
}"""


def one_run(events: int, rate: float, warmup: int = 5) -> list[float]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="aiflow-sidebar-bench-") as tmp:
        tmp = Path(tmp)
        db = f"sqlite:///{tmp / 'meta.db'}"
        (tmp / "root").mkdir()
        bus = EventServerProcess(db).start()
        lab = JupyterLab(tmp / "root", tmp / "home", env={"AIFLOW_EVENT_URL": bus.url, "AIFLOW_META_URL": db})
        client = EventClient(bus.url)
        try:
            lab.start()
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(lab.url("lab"))
                    page.click(".jp-SideBar li[data-id='aiflow-sidebar']", timeout=120_000)
                    page.wait_for_selector("#aiflow-sidebar .aiflow-events", timeout=60_000)
                    page.evaluate(STAMP_ROWS)
                    for i in range(warmup):  # the push channel is up once these show
                        client.send_event(Event(f"bench.warm{i}", "w", "BENCH"))
                    wait_for(lambda: page.evaluate(f"Object.keys(window.__seen).length >= {warmup}"), timeout=60,
                             what="the warm-up events in the sidebar")
                    sent: dict[str, float] = {}
                    start = time.time()
                    for i in range(events):
                        pause = start + i / rate - time.time()
                        if pause > 0:
                            time.sleep(pause)
                        key = f"bench.{i}"
                        sent[key] = time.time() * 1000
                        client.send_event(Event(key, "x" * 100, "BENCH"))
                    wait_for(lambda: page.evaluate(f"Object.keys(window.__seen).length >= {events + warmup}"),
                             timeout=60, what="every event in the sidebar")
                    seen = page.evaluate("window.__seen")
                finally:
                    browser.close()
        finally:
            client.close()
            lab.stop()
            bus.stop()
    return [seen[key] - at for key, at in sent.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    args = parser.parse_args()
    print(f"# {chromium_version()}", file=sys.stderr)
    results = [one_run(args.events, args.rate) for _ in range(args.runs)]
    for name, q in (("p50", 50), ("p99", 99), ("max", 100)):
        emit("sidebar", f"bus_event_to_sidebar_dom_{name}", statistics.median(percentile(r, q) for r in results),
             "ms", events=args.events, rate=args.rate, runs=args.runs)


if __name__ == "__main__":
    main()
