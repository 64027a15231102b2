"""Run notebooks/00_quickstart.ipynb headless (nbclient) and print a short summary of what happened.

This is `make demo`. State goes to .demo/aiflow_home (fresh each run) and the executed notebook, with its
outputs, to .demo/00_quickstart.ipynb, so you can inspect both after:
    AIFLOW_HOME=.demo/aiflow_home .venv/bin/aiflow models versions ctr

The summary is read back from the metadata store and the event log the run left behind (not from the
notebook's printouts): jobs and their states, model versions with AUC and stage, impressions scored per
version, and time taken per phase. ``story_summary`` is shared with bench/quickstart_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "00_quickstart.ipynb"
DEMO = REPO / ".demo"
WORKFLOW, MODEL = "ctr", "ctr"
JOBS = ("prep", "train", "evaluate", "validate", "serve")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=DEMO / "aiflow_home", help="AIFLOW_HOME for the run (emptied first)")
    parser.add_argument("--out", type=Path, default=DEMO / "00_quickstart.ipynb", help="where the executed notebook goes")
    parser.add_argument("--impressions", type=int, default=None, metavar="N",
                        help="day-1 click log size (default 200,000; fewer for a quicker look)")
    args = parser.parse_args(argv)
    home, out = args.home.resolve(), args.out.resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.monotonic()
    print(f"== running {NOTEBOOK.relative_to(REPO)} headless, AIFLOW_HOME={home}", flush=True)
    ok, nb = run_notebook(home, args.impressions)
    out.parent.mkdir(parents=True, exist_ok=True)
    import nbformat

    nbformat.write(nb, out)
    elapsed = time.monotonic() - started
    if not ok:
        print(f"!! the quickstart failed after {elapsed:.0f} s; the executed notebook (with the error) is in {out}",
              file=sys.stderr)
        return 1
    summary = story_summary(home, nb)
    print(format_summary(summary, elapsed, out, home))
    return 0


def run_notebook(home: Path, impressions: int | None = None):
    """Execute the quickstart in a fresh kernel with ``AIFLOW_HOME=home``; returns (ok, executed notebook)."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = dict(os.environ, AIFLOW_HOME=str(home))
    env.pop("AIFLOW_META_URL", None)
    if impressions:
        env["QUICKSTART_IMPRESSIONS"] = str(impressions)
    # The kernel is the venv's python: put it first on PATH for the kernelspec's plain "python".
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    clock = time.monotonic()

    def on_cell_executed(cell, cell_index, execute_reply, **_):
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        print(f"-- [{code_cells.index(cell) + 1}/{len(code_cells)}] {time.monotonic() - clock:5.0f} s  {first_line[:70]}",
              flush=True)

    # IPC sockets (not TCP on loopback): private to this machine's user, and no plaintext-TCP warning.
    kernel = KernelManager(kernel_name="python3", transport="ipc")
    client = NotebookClient(nb, km=kernel, timeout=600, resources={"metadata": {"path": str(REPO)}},
                            on_cell_executed=on_cell_executed)
    try:
        kernel.start_kernel(env=env)
        client.execute()
        return True, nb
    except CellExecutionError as exc:
        print(f"\n!! {str(exc)[-3000:]}", file=sys.stderr)
        return False, nb
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel()  # a clean exit: the kernel stops the jobs its scheduler started


# --- what happened, from the store and the event log -----------------------------------------------------


def story_summary(home: Path, nb: Any = None) -> dict[str, Any]:
    """The outcome of a quickstart run under ``home``: events, job runs, versions, scores, phases."""
    from aiflow_notebook.events import EventClient, EventServer
    from aiflow_notebook.meta import MetadataStore

    db_url = f"sqlite:///{home / 'meta.db'}"
    with EventServer(db_url, bind=f"ipc://{home / 'summary.sock'}").start() as server:
        with EventClient(server.url) as client:
            events = _all_events(client)
    with MetadataStore(db_url) as store:
        versions = [{"version": v.version, "stage": v.stage, "metrics": dict(v.metrics or {}), "job_run": v.job_run_id}
                    for v in store.list_model_versions(MODEL)]
    status = [e for e in events if e.event_type == "JOB_STATUS_CHANGED" and e.key.startswith(WORKFLOW + ".")]
    validated = [e for e in events if e.event_type == "MODEL_VALIDATED" and e.key == MODEL]
    data = home / "quickstart"
    scores = _rows(data / "scores")
    sent = [int(row[0]) for row in _rows(data / "stream")]
    by_version = Counter(int(row[2]) for row in scores)
    first_scored = _first_scored_time(data / "scores")
    jobs: dict[str, str] = {job: "INIT" for job in JOBS}
    for e in status:
        jobs[e.key.split(".", 1)[1]] = e.value
    summary = {
        "jobs": jobs,
        "job_events": [(e.key.split(".", 1)[1], e.value, e.create_time, json.loads(e.context or "{}"))
                       for e in status],
        "validated": [(json.loads(e.value)["version"], e.create_time) for e in validated],
        "versions": versions,
        "scored_per_version": dict(sorted(by_version.items())),
        "sent": len(sent), "scored": len(scores),
        "missing": len(set(sent) - {int(r[0]) for r in scores}),
        "duplicated": sum(n - 1 for n in Counter(int(r[0]) for r in scores).values() if n > 1),
        "phases": _phases(status, validated, first_scored,
                          [e for e in events if e.event_type == "MODEL_SWAPPED" and e.key == f"{WORKFLOW}.serve"]),
        "best_auc": _printed_best_auc(nb),
    }
    return summary


def _all_events(client) -> list:
    events, since = [], 0
    while True:
        page = client.list_events(since_version=since, limit=1000)
        if not page:
            return events
        events.extend(page)
        since = page[-1].version


def _rows(path: Path) -> list[list[str]]:
    from aiflow_notebook.storage.part_files import read_rows

    return read_rows(path) if path.exists() else []


def _first_scored_time(scores: Path) -> dict[int, float]:
    """When the first score of each version was committed (the part file's time), in ms since the epoch."""
    first: dict[int, float] = {}
    if not scores.exists():
        return first
    for part in scores.rglob("*"):
        if part.is_file() and not part.name.startswith((".", "_")):
            mtime = part.stat().st_mtime * 1000
            for line in part.read_text().splitlines():
                version = int(line.split(",")[2])
                first[version] = min(first.get(version, mtime), mtime)
    return first


def _phases(status: list, validated: list, first_scored: dict[int, float], swapped: list) -> dict[str, float]:
    """Seconds per phase: each batch job's runs (STARTING → FINISHED), serve coming up on v1 and the swap
    to v2 (from the MODEL_VALIDATED event to MODEL_SWAPPED, and to the first v2 score committed)."""
    phases: dict[str, float] = {}
    starts: dict[int, int] = {}
    seen: Counter = Counter()
    for e in status:
        job, job_run = e.key.split(".", 1)[1], json.loads(e.context or "{}").get("job_run")
        if e.value == "STARTING":
            starts[job_run] = e.create_time
        elif e.value == "FINISHED" and job != "serve" and job_run in starts:
            seen[job] += 1
            phases[f"{job} (v{seen[job]})"] = (e.create_time - starts.pop(job_run)) / 1000
    if validated and 1 in first_scored:
        phases["serve up on v1 (MODEL_VALIDATED v1 -> first v1 score committed)"] = \
            (first_scored[1] - validated[0].create_time) / 1000
    if len(validated) >= 2:
        v2_at = validated[1].create_time
        if swapped:
            phases["swap to v2 in place (MODEL_VALIDATED v2 -> MODEL_SWAPPED)"] = (swapped[0].create_time - v2_at) / 1000
        if 2 in first_scored:
            phases["swap latency (MODEL_VALIDATED v2 -> first v2 score committed)"] = (first_scored[2] - v2_at) / 1000
    return phases


def _printed_best_auc(nb: Any) -> float | None:
    for cell in getattr(nb, "cells", []) or []:
        for output in cell.get("outputs", []):
            found = re.search(r"best achievable AUC ([0-9.]+)", output.get("text", "") or "")
            if found:
                return float(found.group(1))
    return None


def format_summary(summary: dict[str, Any], elapsed: float, out: Path, home: Path) -> str:
    lines = [f"== quickstart finished in {elapsed:.0f} s", "jobs (last state):  " +
             ", ".join(f"{job} {state}" for job, state in summary["jobs"].items())]
    best = summary["best_auc"]
    lines.append("model versions" + (f" (best achievable AUC {best:.4f})" if best else "") + ":")
    for v in summary["versions"]:
        m = v["metrics"]
        lines.append(f"  ctr v{v['version']}  {v['stage']:<10} AUC {m.get('auc')}  train loss {m.get('train_loss')}"
                     f"  ({m.get('validation')}); fed {m.get('feed_rows_per_s')} rows/s to training;"
                     f" scored {summary['scored_per_version'].get(v['version'], 0)} impressions")
    lines.append(f"stream: {summary['sent']} impressions sent, {summary['scored']} scores, "
                 f"{summary['missing']} missing, {summary['duplicated']} duplicated")
    lines.append("time per phase: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary["phases"].items()))
    rel = lambda p: p.relative_to(REPO) if p.is_relative_to(REPO) else p  # noqa: E731
    lines.append(f"executed notebook with its outputs: {rel(out)}")
    lines.append(f"inspect the state: AIFLOW_HOME={rel(home)} .venv/bin/aiflow models versions ctr")
    root = " --allow-root" if os.geteuid() == 0 else ""
    lines.append(f"see it in JupyterLab: AIFLOW_HOME={rel(home)} .venv/bin/jupyter lab{root} (the AI Flow sidebar, "
                 "docs/lab_extension.md)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
