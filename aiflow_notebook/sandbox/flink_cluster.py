"""A real standalone Flink cluster (a JobManager + N TaskManagers) on loopback, from the PyFlink wheel.

The PyFlink wheel carries a full Flink distribution. This starts it with a private configuration
directory (loopback addresses, free ports, private log/pid/tmp dirs, no ssh) so tests and benchmarks can
check "runs on a real Flink cluster" without anything installed beyond ``apache-flink``, and
``aiflow demo --cluster`` shows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from aiflow_notebook.core.files import private_dir
from aiflow_notebook.core.ports import free_port
from aiflow_notebook.core.waiting import polling
from aiflow_notebook.engines.flink_rest import FlinkRest


def pyflink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


class StandaloneFlinkCluster:
    """``start()`` it (or use ``with``); ``stop()`` shuts it down and removes its files."""

    def __init__(self, slots: int = 2, jobmanager_mb: int = 1024, taskmanager_mb: int = 2048,
                 taskmanagers: int = 1, base: str | os.PathLike | None = None):
        self.home = pyflink_home()
        self.taskmanagers = taskmanagers
        self.base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="aiflow-flink-"))
        private_dir(self.base)
        self.conf_dir = self.base / "conf"
        self.rest_port, self.rpc_port = free_port(), free_port()
        self.client = FlinkRest(self.address, timeout=5)
        self.slots, self.jobmanager_mb, self.taskmanager_mb = slots, jobmanager_mb, taskmanager_mb
        self._started = False

    @property
    def address(self) -> str:
        """``host:port`` of the REST endpoint, as ``flink run -m`` takes it."""
        return f"127.0.0.1:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return self.client.url

    def env(self) -> dict[str, str]:
        """The environment of the cluster's scripts and JVMs: without what PyFlink's loopback mode left in this
        process (a local job run here earlier). Inherited, it makes the TaskManagers run their Python
        operators back in this process instead of in their own workers."""
        from aiflow_notebook.engines.process import PYFLINK_WORKER_VARIABLES

        inherited = {key: value for key, value in os.environ.items() if key not in PYFLINK_WORKER_VARIABLES}
        return {**inherited, "FLINK_HOME": str(self.home), "FLINK_CONF_DIR": str(self.conf_dir),
                "FLINK_LIB_DIR": str(self.base / "lib"),
                "FLINK_LOG_DIR": str(self.base / "log"), "FLINK_PID_DIR": str(self.base / "pid")}

    def start(self, timeout: float = 120) -> StandaloneFlinkCluster:
        shutil.copytree(self.home / "conf", self.conf_dir)
        for sub in ("log", "pid", "tmp", "lib"):
            (self.base / sub).mkdir()
        # Flink's lib, plus flink-python (PEMJA, Python in the JVM): loaded once by the TaskManagers'
        # own class loader, not again by each job's. A second job in thread mode
        # (flink.python.execution-mode=thread) failed otherwise: PEMJA cannot load its native library
        # in a second class loader on Java 17 ("NoSuchFieldException: loadedLibraryNames").
        for jar in [*(self.home / "lib").glob("*.jar"), *(self.home / "opt").glob("flink-python*.jar")]:
            (self.base / "lib" / jar.name).symlink_to(jar)
        config = yaml.safe_load((self.conf_dir / "config.yaml").read_text())
        config["jobmanager"].update({"bind-host": "127.0.0.1",
                                     "rpc": {"address": "127.0.0.1", "port": self.rpc_port},
                                     "memory": {"process": {"size": f"{self.jobmanager_mb}m"}}})
        config["taskmanager"].update({"bind-host": "127.0.0.1", "host": "127.0.0.1",
                                      "numberOfTaskSlots": self.slots,
                                      "memory": {"process": {"size": f"{self.taskmanager_mb}m"}},
                                      "rpc": {"port": "0"}, "data": {"port": 0}})
        # spread a job's slots over the TaskManagers (Flink packs them into the first one by default), so a
        # dl cluster's nodes land in different TaskManagers
        config["taskmanager"]["load-balance"] = {"mode": "SLOTS"}
        config["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": self.rest_port}
        config["blob"] = {"server": {"port": "0"}}
        config["classloader"] = {"parent-first-patterns": {"additional": "pemja."}}  # see the lib above
        config["io"] = {"tmp": {"dirs": str(self.base / "tmp")}}
        config.setdefault("env", {}).update({"log": {"dir": str(self.base / "log")}, "pid": {"dir": str(self.base / "pid")}})
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("127.0.0.1\n")
        self._started = True
        # what start-cluster.sh does, without ssh; each taskmanager.sh start adds one TaskManager
        for script in ("jobmanager.sh", *["taskmanager.sh"] * self.taskmanagers):
            subprocess.run([str(self.home / "bin" / script), "start"], env=self.env(), check=True,
                           capture_output=True, timeout=60)
        for _ in polling(timeout, 0.5):
            try:
                if self.rest("/overview").get("taskmanagers", 0) >= self.taskmanagers:
                    return self
            except OSError:
                pass
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in (self.base / "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"Flink cluster did not come up within {timeout} s; logs:\n{logs}")

    def rest(self, path: str, method: str = "GET") -> dict:
        """The answer of the cluster's REST API to ``method path`` (see ``engines.flink_rest``)."""
        return self.client.request(path, method)

    def jobs(self) -> list[dict]:
        return self.client.jobs()

    def pids(self) -> list[int]:
        """The JVMs of this cluster (from its pid files)."""
        return [int(word) for path in (self.base / "pid").glob("*.pid")
                for word in path.read_text().split() if word.isdigit()]

    def subtask_taskmanagers(self, job_id: str, name_contains: str, parallelism: int | None = None) -> dict[int, str]:
        """``{subtask index: TaskManager id}`` of the job's vertex whose name contains ``name_contains``
        (and of ``parallelism``, if given), from Flink's REST API."""
        job = self.client.job(job_id)
        vertex = next((v for v in job["vertices"] if name_contains in v["name"]
                       and parallelism in (None, v["parallelism"])), None)
        if vertex is None:
            names = [v["name"] for v in job["vertices"]]
            raise LookupError(f"job {job_id} has no vertex named like {name_contains!r} (vertices: {names})")
        placed = {}
        for subtask in self.rest(f"/jobs/{job_id}/vertices/{vertex['id']}").get("subtasks", []):
            placed[int(subtask["subtask"])] = subtask.get("taskmanager-id") or subtask.get("host")
        return placed

    def stop(self) -> None:
        if self._started:
            for script in ("taskmanager.sh", "jobmanager.sh"):
                subprocess.run([str(self.home / "bin" / script), "stop-all"], env=self.env(),
                               capture_output=True, timeout=60)
            _kill_from_pid_files(self.base / "pid")
            self._started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> StandaloneFlinkCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill_from_pid_files(pid_dir: Path) -> None:
    """Belt and braces: any JVM still listed in our pid files is killed."""
    import psutil

    for pid_file in pid_dir.glob("*.pid"):
        for line in pid_file.read_text().split():
            try:
                proc = psutil.Process(int(line))
                proc.kill()
                proc.wait(10)
            except (ValueError, psutil.NoSuchProcess, psutil.TimeoutExpired):
                continue
