"""A throw-away PostgreSQL server from Debian's package, on a free loopback port.

``initdb`` refuses to run as root, so as root the data directory is owned by (and the server runs as)
the ``postgres`` user. Authentication is ``trust`` on 127.0.0.1 only: this is for tests, benchmarks and `aiflow demo --cluster --postgres`, never for real data.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from aiflow_notebook.core.ports import free_port


def postgres_bin_dir() -> Path | None:
    """Debian's ``/usr/lib/postgresql/<major>/bin`` (newest major), or None if not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """Start with :meth:`start` (or ``with``); :meth:`stop` shuts it down and deletes its files."""

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable  # False: fsync off (faster tests; never for benchmarks)
        self.bin_dir = postgres_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/setup.sh --test does)")
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="aiflow-pg-"))
        self.data_dir, self.run_dir = self.base / "data", self.base / "run"
        self._as_root = os.geteuid() == 0
        self._started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=self.base)

    def start(self) -> PostgresServer:
        os.chmod(self.base, 0o755)
        for directory in (self.data_dir, self.run_dir):
            directory.mkdir()
            if self._as_root:
                shutil.chown(directory, "postgres", "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.run_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                  "-l", str(self.run_dir / "log"), "-w", "start")
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_password_database(self, name: str, password: str) -> str:
        """A role ``name`` that must log in with ``password`` (scram-sha-256, not trust) and a database of
        the same name it owns; returns the SQLAlchemy URL, password included."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
            hba = self.data_dir / "pg_hba.conf"  # the first matching line wins: put ours before "trust"
            hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        return f"postgresql+psycopg://{name}:{password}@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
