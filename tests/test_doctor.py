"""``aiflow doctor`` against real components: a standalone Flink cluster, a CURVE aiflow server, SQLite
databases; then a wrong key, a stopped server, an unreachable cluster and an un-migrated database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

import aiflow_notebook
from aiflow_notebook.cli import main
from aiflow_notebook.core.ports import free_port
from aiflow_notebook.events.auth import create_server_keys
from aiflow_notebook.testing.event_server import EventServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", "doctor", *args], capture_output=True,
                          text=True, timeout=240, env=env)


def test_a_good_configuration_passes_every_check(flink_cluster, curve_server):
    server, keys, db = curve_server, curve_server.keys, curve_server.db_url
    result = doctor("--flink", f"flink://{flink_cluster.address}", "--db", db, "--server", server.url,
                    "--server-key", str(keys / "server.key"), "--client-key", str(keys / "alice.key_secret"))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in lines] == [["OK", "flink"], ["OK", "taskmanager"], ["OK", "database"],
                                                    ["OK", "server"]], lines
    assert "Flink 2.3.0" in lines[0] and "2 TaskManager(s)" in lines[0]
    # the package was imported by a Python worker of a TaskManager: its version and where it was found
    assert f"aiflow_notebook {aiflow_notebook.__version__} at {aiflow_notebook.__file__}" in lines[1], lines[1]
    assert [job["name"] for job in flink_cluster.jobs()].count("aiflow doctor probe") >= 1


def test_the_environment_supplies_the_settings(curve_server):
    server, keys, db = curve_server, curve_server.keys, curve_server.db_url

    env = {**os.environ, "AIFLOW_META_URL": db, "AIFLOW_SERVER_URL": server.url,
           "AIFLOW_SERVER_KEY": str(keys / "server.key"), "AIFLOW_CLIENT_KEY": str(keys / "alice.key_secret")}
    env.pop("AIFLOW_PLATFORM", None)
    result = doctor(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["OK", "database"], ["OK", "server"]]


def test_a_key_the_server_does_not_list_fails_and_says_what_to_fix(curve_server, tmp_path):
    server, keys = curve_server, curve_server.keys
    from aiflow_notebook.events.auth import create_client_keys

    _public, secret = create_client_keys(tmp_path / "mine", "mallory")  # a key pair nobody listed
    result = doctor("--server", server.url, "--server-key", str(keys / "server.key"), "--client-key", str(secret),
                    "--timeout", "3")
    assert result.returncode == 1
    line = result.stdout.strip()
    assert line.startswith("FAIL server") and "does not admit this key pair" in line, line


def test_a_stopped_server_an_unreachable_cluster_and_an_empty_database_fail(tmp_path):
    keys = tmp_path / "keys"
    create_server_keys(keys)
    assert main(["server", "keys", str(keys), "--client", "bob"]) == 0
    server = EventServerProcess(f"sqlite:///{tmp_path / 's.db'}", extra_args=["--curve", str(keys)]).start()
    server.stop()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = doctor("--flink", f"http://127.0.0.1:{free_port()}", "--db", f"sqlite:///{empty}", "--server", server.url,
                    "--server-key", str(keys / "server.key"), "--client-key", str(keys / "bob.key_secret"),
                    "--timeout", "3")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["FAIL", "flink"], ["FAIL", "taskmanager"], ["FAIL", "database"],
                                                    ["FAIL", "server"]], lines
    assert "start the cluster" in lines[0]
    assert "aiflow db upgrade" in lines[2]
    assert "the server is down" in lines[3]


def test_nothing_to_check_says_how_to_name_something():
    env = {k: v for k, v in os.environ.items() if k not in ("AIFLOW_PLATFORM", "AIFLOW_META_URL", "AIFLOW_SERVER_URL")}
    result = doctor(env=env)
    assert result.returncode == 2 and "nothing to check" in result.stdout
