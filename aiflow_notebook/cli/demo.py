"""``aiflow demo --cluster``: the quickstart on a real standalone Flink cluster behind a CURVE ``aiflow server``.

Everything lives in one private directory (mode 0700) made for this run and removed at the end:

- a standalone Flink cluster from the PyFlink wheel (a JobManager and two TaskManagers, on loopback);
- CURVE keys: the server's pair and one listed client, ``notebook``;
- optionally (``--postgres``) a PostgreSQL server from Debian's package as the metadata database, else a
  SQLite file;
- an ``aiflow server start --curve`` process (event bus + scheduler + metadata) in a process group of its own;
- the notebook: ``notebooks/00_quickstart.ipynb`` executed by nbclient in a kernel — a separate process —
  whose environment points it at the server (``AIFLOW_SERVER_URL`` and the key files) and at the cluster
  (``AIFLOW_PLATFORM=flink://...``), so every flink, pytorch and tensorflow job runs on the cluster.

It then prints what ran where (Flink's own record, from its REST API: each job's state and TaskManagers),
the model versions, and the Flink web UI address, and stops everything — also on Ctrl-C or a failure: the
clean-up is a ``finally`` that cancels cluster jobs, ends the server's process group and every process it
started, and stops the cluster's JVMs. ``--summary FILE`` also writes the summary as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.files import private_dir

NOTEBOOK_NAME = "00_quickstart.ipynb"
CLIENT_NAME = "notebook"
CLUSTER_ENGINES = ("flink", "pytorch", "tensorflow")  # engines whose jobs run on the Flink cluster


class DemoError(AIFlowError):
    """A step of the cluster demo failed; the message names the step."""


def add_demo_arguments(demo) -> None:
    demo.add_argument("--cluster", action="store_true", required=True,
                      help="run the quickstart on a standalone Flink cluster behind a CURVE aiflow server")
    demo.add_argument("--postgres", action="store_true", help="use a PostgreSQL server as the metadata database")
    demo.add_argument("--notebook", metavar="PATH", default=None,
                      help=f"the notebook to run (default: the quickstart, {NOTEBOOK_NAME})")
    demo.add_argument("--summary", metavar="FILE", default=None, help="also write the summary as JSON to FILE")
    demo.add_argument("--keep", action="store_true", help="keep the demo's directory (logs, database) afterwards")
    demo.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                      help="the notebook's deadline (default 900)")
    demo.add_argument("--impressions", type=int, default=None, metavar="N",
                      help="the quickstart's day-1 click log size (default 200,000; fewer for a quicker look)")


def add_commands(commands) -> None:
    demo = commands.add_parser("demo", help="run the quickstart end to end (--cluster: on a real Flink cluster)")
    add_demo_arguments(demo)
    demo.set_defaults(func=lambda args: run_demo(postgres=args.postgres, notebook=args.notebook,
                                                 summary_file=args.summary, keep=args.keep, timeout=args.timeout,
                                                 impressions=args.impressions))


def run_demo(*, postgres: bool = False, notebook: str | None = None, summary_file: str | None = None,
             keep: bool = False, timeout: float = 900, impressions: int | None = None,
             say: Callable[[str], None] = print) -> int:
    """Start the pieces, run the notebook, print the summary, stop everything. Returns 0 on success."""
    base = Path(tempfile.mkdtemp(prefix="aiflow-demo-cluster-"))  # 0700
    demo = ClusterDemo(base, postgres=postgres, say=say, impressions=impressions)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        demo.start()
        demo.run_notebook(Path(notebook) if notebook else quickstart_notebook(), timeout)
        summary = demo.summary()
        say(format_summary(summary))
        if summary_file:
            Path(summary_file).write_text(json.dumps(summary, indent=2))
        missing = [f"{run['workflow']}.{job['name']}" for run in summary["runs"] for job in run["jobs"]
                   if job["engine"] in CLUSTER_ENGINES and not job["flink_jobs"]]
        if missing or not summary["runs"]:
            raise DemoError(f"jobs {missing or 'of the notebook'} did not run on the Flink cluster "
                            f"(see {base}/flink/log)")
        return 0
    finally:
        try:
            demo.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if keep:
                say(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)


def quickstart_notebook() -> Path:
    """The quickstart notebook: the repository's (a source checkout), else the copy a wheel installs under
    ``<prefix>/share/aiflow-notebook/notebooks`` (pyproject's data-files)."""
    repo = Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK_NAME
    if repo.exists():
        return repo
    shipped = Path(sys.prefix) / "share" / "aiflow-notebook" / "notebooks" / NOTEBOOK_NAME
    if shipped.exists():
        return shipped
    raise DemoError(f"cannot find {NOTEBOOK_NAME} (looked at {repo} and {shipped}); pass --notebook PATH")


class ClusterDemo:
    """The demo's services; :meth:`stop` is safe to call at any point, and more than once."""

    def __init__(self, base: Path, *, postgres: bool, say: Callable[[str], None], impressions: int | None = None) -> None:
        self.base, self.use_postgres, self.say = base, postgres, say
        self.impressions = impressions  # the quickstart's click log size (QUICKSTART_IMPRESSIONS), None: its default
        self.home = base / "home"
        self.keys = base / "keys"
        self.cluster = None
        self.postgres = None
        self.server = None  # a ServerProcess
        self.server_processes: list = []  # psutil.Process of the server and everything it started
        self.db_url = ""
        self.server_url = ""
        self.started = time.monotonic()

    # --- start ---------------------------------------------------------------------------------------

    def start(self) -> None:
        from aiflow_notebook.events.auth import allow_client, create_client_keys, create_server_keys
        from aiflow_notebook.sandbox.flink_cluster import StandaloneFlinkCluster

        private_dir(self.home)
        private_dir(self.keys)
        create_server_keys(self.keys)
        public, _secret = create_client_keys(self.keys / "clients-private", CLIENT_NAME)
        allow_client(self.keys, public)
        self.say(f"== keys: server and client {CLIENT_NAME!r} under {self.keys} (mode 0700)")

        self.cluster = StandaloneFlinkCluster(taskmanagers=2, slots=2, jobmanager_mb=768, taskmanager_mb=1536,
                                              base=self.base / "flink")
        self.say("== starting a standalone Flink cluster (1 JobManager + 2 TaskManagers) from the PyFlink wheel")
        self.cluster.start()
        self.say(f"   Flink web UI: {self.cluster.rest_url} (JVM pids {self.cluster.pids()})")

        if self.use_postgres:
            from aiflow_notebook.sandbox.postgres import PostgresServer

            self.postgres = PostgresServer().start()
            self.db_url = self.postgres.create_database("aiflow")
            self.say(f"== PostgreSQL on 127.0.0.1:{self.postgres.port}")
        else:
            self.db_url = f"sqlite:///{self.home / 'meta.db'}"
        self._start_server()

    def _start_server(self) -> None:
        from aiflow_notebook.core.ports import free_port
        from aiflow_notebook.sandbox.server_process import ServerProcess, ServerStartError

        self.server_url = f"tcp://127.0.0.1:{free_port()}"
        self.server = ServerProcess(["--db", self.db_url, "--bind", self.server_url, "--curve", str(self.keys),
                                     "--home", str(self.home)], log_path=self.base / "server.log", env=self._env(),
                                    cwd=self.base)
        try:
            self.server.start(timeout=60)
        except ServerStartError as exc:
            raise DemoError(str(exc)) from None
        self.say(f"== aiflow server (CURVE) on {self.server_url}, database {self.db_url.split('@')[-1]}")

    def _env(self) -> dict[str, str]:
        """The environment of the server and the notebook kernel: this demo's home, this interpreter first."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AIFLOW_", "FLINK_", "_PYTHON_WORKER"))}
        env["AIFLOW_HOME"] = str(self.home)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def notebook_env(self) -> dict[str, str]:
        """What makes the kernel a client of this demo: ``AIFLOW_SERVER_URL``/``AIFLOW_SERVER_KEY``/
        ``AIFLOW_CLIENT_KEY`` connect the SDK to the server (the one source of truth: runs, models, events),
        ``AIFLOW_PLATFORM`` sends every Flink and dl job to the cluster. The kernel has a home of its own:
        nothing it needs may come from the server's."""
        return {**self._env(), "AIFLOW_HOME": str(self.base / "notebook-home"),
                "AIFLOW_SERVER_URL": self.server_url, "AIFLOW_SERVER_KEY": str(self.keys / "server.key"),
                "AIFLOW_CLIENT_KEY": str(self.keys / "clients-private" / f"{CLIENT_NAME}.key_secret"),
                "AIFLOW_PLATFORM": f"flink://{self.cluster.address}", "AIFLOW_DEMO_STOP_AT_END": "1",
                **({"QUICKSTART_IMPRESSIONS": str(self.impressions)} if self.impressions else {})}

    # --- the notebook --------------------------------------------------------------------------------

    def run_notebook(self, path: Path, timeout: float) -> None:
        import nbformat
        from jupyter_client.manager import KernelManager
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError

        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(CONNECT_CELL))
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        self.say(f"== running {path.name} ({len(code_cells)} code cells) in a kernel connected to the server")

        def on_cell_executed(cell, **_):
            first = (cell.source.strip().splitlines() or [""])[0]
            self.say(f"-- [{code_cells.index(cell) + 1}/{len(code_cells)}] {first}")
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    self.say("\n".join(f"   {line}" for line in output.get("text", "").rstrip().splitlines()))
                elif output.get("output_type") == "error":
                    self.say(f"   {output.get('ename')}: {output.get('evalue')}")

        workdir = self.base / "notebook"
        workdir.mkdir()
        kernel = KernelManager(kernel_name="python3", transport="ipc", connection_file=str(workdir / "kernel.json"))
        client = NotebookClient(nb, km=kernel, timeout=int(timeout), on_cell_executed=on_cell_executed,
                                resources={"metadata": {"path": str(workdir)}})
        try:
            client.execute(env=self.notebook_env(), cwd=str(workdir))
        except CellExecutionError as exc:
            raise DemoError(f"the notebook failed:\n{str(exc)[-4000:]}") from None
        finally:
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=False)

    # --- the summary ---------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What ran where, from Flink's REST API and the metadata database."""
        jobs = []
        for job in sorted(self.cluster.jobs(), key=lambda j: j.get("start-time", 0)):
            detail = self.cluster.rest(f"/jobs/{job['jid']}")
            taskmanagers = set()
            for vertex in detail.get("vertices", []):
                for subtask in self.cluster.rest(f"/jobs/{job['jid']}/vertices/{vertex['id']}").get("subtasks", []):
                    taskmanagers.add(subtask.get("taskmanager-id") or subtask.get("host"))
            jobs.append({"name": job["name"], "jid": job["jid"], "state": job["state"],
                         "duration_ms": job.get("duration"), "taskmanagers": sorted(t for t in taskmanagers if t)})
        from aiflow_notebook.meta import MetadataStore
        from aiflow_notebook.sdk.workflow import Workflow

        store = MetadataStore(self.db_url)
        runs, versions = [], []
        try:
            for run in store.list_workflow_runs():
                workflow = Workflow.from_bytes(store.get_workflow_snapshot(run.snapshot_id)) if run.snapshot_id else None
                runs.append({"workflow": run.workflow, "run": run.id, "state": run.state, "jobs": [
                    {"name": job.name, "engine": job.engine, "platform": job.platform,
                     "flink_jobs": [j["jid"] for j in jobs if j["name"] == f"{run.workflow}.{job.name}"]}
                    for job in (workflow.jobs.values() if workflow else [])]})
                models = {n.model for j in (workflow.jobs.values() if workflow else []) for n in j.nodes if n.model}
                for model in sorted(models - {v["model"] for v in versions}):
                    try:
                        versions += [{"model": v.model, "version": v.version, "stage": v.stage}
                                     for v in store.list_model_versions(model)]
                    except AIFlowError:
                        continue
        finally:
            store.close()
        return {"flink_web_ui": self.cluster.rest_url, "server": self.server_url, "database": self.db_url,
                "jvm_pids": self.cluster.pids(), "flink_jobs": jobs, "runs": runs,
                "model_versions": versions, "seconds": round(time.monotonic() - self.started, 1)}

    # --- stop ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel cluster jobs, end the server and all it started, stop the JVMs and PostgreSQL."""
        import psutil

        from aiflow_notebook.engines.flink_rest import ENDED_STATES

        if self.server is not None:
            try:
                root = psutil.Process(self.server.pid)
                self.server_processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                self.server_processes = []
        if self.cluster is not None:
            try:
                for job in self.cluster.jobs():
                    if job["state"] not in ENDED_STATES:
                        self.cluster.client.cancel(job["jid"])
            except OSError:
                pass
        if self.server is not None:
            self.server.stop(grace=20)
            self.server = None
        _end_all(self.server_processes)  # job processes live in groups of their own
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


CONNECT_CELL = """\
# added by `aiflow demo --cluster`: this kernel is a client of the demo's aiflow server
import os
import aiflow_notebook as af
if not af.connected():
    af.connect(os.environ["AIFLOW_SERVER_URL"], auth=(os.environ["AIFLOW_SERVER_KEY"], os.environ["AIFLOW_CLIENT_KEY"]))
print("connected to", os.environ["AIFLOW_SERVER_URL"], "; jobs run on", os.environ["AIFLOW_PLATFORM"])
"""


def format_summary(summary: dict[str, Any]) -> str:
    lines = ["== summary",
             f"   Flink web UI: {summary['flink_web_ui']}  (stopped with the demo)",
             f"   aiflow server: {summary['server']}; database: {summary['database'].split('@')[-1]}",
             "   jobs on the Flink cluster (Flink's REST API):"]
    for job in summary["flink_jobs"]:
        lines.append(f"     {job['name']:<14} {job['state']:<9} {job['jid']}  TaskManagers: "
                     f"{', '.join(job['taskmanagers']) or '-'}")
    for run in summary["runs"]:
        lines.append(f"   run {run['run']} of {run['workflow']}: {run['state']}; "
                     + ", ".join(f"{j['name']} ({j['engine']}) on "
                                 + (f"the cluster ({len(j['flink_jobs'])} Flink job(s))" if j["flink_jobs"]
                                    else "the server's job process") for j in run["jobs"]))
    lines.append("   model versions: " + (", ".join(f"{v['model']} v{v['version']} {v['stage']}"
                                                  for v in summary["model_versions"]) or "none"))
    lines.append(f"   done in {summary['seconds']} s")
    return "\n".join(lines)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _end_all(processes: list, grace: float = 15) -> None:
    """End the process group of each process still running (job processes live in groups of their own; one
    cancels its cluster job on SIGTERM): SIGTERM to every group first, so that they stop side by side, then
    :func:`~aiflow_notebook.core.processes.end_group` of each within what is left of ``grace``."""
    from aiflow_notebook.core.processes import end_group, signal_group
    from aiflow_notebook.core.waiting import Deadline

    groups = set()
    for proc in processes:
        try:
            if proc.is_running():
                groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())  # never our own
    deadline = Deadline(grace)
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    for pgid in groups:
        end_group(pgid, deadline.left())
