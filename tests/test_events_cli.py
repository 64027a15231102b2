"""``aiflow server start`` and ``aiflow events send|list|latest|listen`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiflow_notebook.cli import main
from aiflow_notebook.core.ports import free_port

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


def aiflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_send_list_latest(server, capsys):
    assert main(["events", "send", "model.ctr", '{"version": 3}', "--type", "MODEL_VALIDATED", "--url", server.url,
                 "--namespace", "models"]) == 0
    assert "stored as version 1" in capsys.readouterr().out
    assert main(["events", "send", "other", "x", "--url", server.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(["events", "list", "--url", server.url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["VERSION", "CREATED", "NAMESPACE", "KEY"] and len(table) == 3
    assert "MODEL_VALIDATED" in table[1] and "models" in table[1]
    assert main(["events", "list", "--url", server.url, "--key", "other", "--json"]) == 0
    assert [e["value"] for e in json.loads(capsys.readouterr().out)] == ["x"]
    assert main(["events", "latest", "--url", server.url]) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_listen_replays_then_follows(server):
    assert aiflow("events", "send", "k", "before", "--url", server.url).returncode == 0
    listen = subprocess.Popen([sys.executable, "-m", "aiflow_notebook.cli", "events", "listen", "--url", server.url,
                               "--key", "k", "--since-version", "0", "--count", "2", "--json", "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        first = json.loads(listen.stdout.readline())
        assert (first["version"], first["value"]) == (1, "before")
        assert aiflow("events", "send", "k", "after", "--url", server.url).returncode == 0
        second = json.loads(listen.stdout.readline())
        assert (second["version"], second["value"]) == (2, "after")
        assert listen.wait(30) == 0
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.wait()


def test_errors_are_one_line_and_exit_1(tmp_path):
    result = aiflow("events", "send", "k", "v", "--url", f"tcp://127.0.0.1:{free_port()}", "--deadline", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("aiflow: error: no answer from the event server") and "Traceback" not in result.stderr
    result = aiflow("server", "start", "--db", f"sqlite:///{tmp_path / 'e.db'}", "--bind", "tcp://0.0.0.0:0")
    assert result.returncode == 1 and "--curve" in result.stderr and "Traceback" not in result.stderr
    result = aiflow("server", "start", "--db", f"sqlite:///{tmp_path / 'e.db'}", "--curve", str(tmp_path / "none"))
    assert result.returncode == 1 and "aiflow server keys" in result.stderr


def test_port_in_use_is_a_clear_error(server, tmp_path):
    result = aiflow("server", "start", "--db", f"sqlite:///{tmp_path / 'other.db'}", "--bind", server.url)
    assert result.returncode == 1 and "cannot bind" in result.stderr and "another server" in result.stderr
