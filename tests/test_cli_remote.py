"""`aiflow models` and `aiflow events` in a terminal set up like the notebook (``$AIFLOW_SERVER_URL`` and
its keys) talk to that `aiflow server`, a real `aiflow server start --curve` process: they read its model
center and event log, a stage change is the server's event sent by this client's listed name, and nothing
is written to the terminal's own AIFLOW_HOME. Without a listed key the server is not reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiflow_notebook as af
from aiflow_notebook.events.auth import create_client_keys
from aiflow_notebook.meta import MetadataStore

AIFLOW = str(Path(sys.executable).parent / "aiflow")


def _aiflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([AIFLOW, *args], capture_output=True, text=True, timeout=60, env=env)


def test_models_and_events_commands_follow_the_server_the_environment_names(curve_server, tmp_path):
    keys = curve_server.keys
    af.connect(curve_server.url, auth=(str(keys / "server.key"), str(keys / "alice.key_secret")))
    af.register_model("ctr")
    af.register_model_version("ctr", uri="file:///models/ctr/1", metrics={"auc": 0.81})
    af.disconnect()

    terminal_home = tmp_path / "terminal_home"
    env = {**os.environ, "AIFLOW_HOME": str(terminal_home), "AIFLOW_SERVER_URL": curve_server.url,
           "AIFLOW_SERVER_KEY": str(keys / "server.key"), "AIFLOW_CLIENT_KEY": str(keys / "alice.key_secret")}
    listed = _aiflow("models", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["ctr", "1", "GENERATED"]

    staged = _aiflow("models", "stage", "ctr", "1", "VALIDATED", env=env)
    assert staged.returncode == 0 and "ctr version 1 is now VALIDATED" in staged.stdout, staged.stderr
    with MetadataStore(f"sqlite:///{curve_server.home / 'meta.db'}") as store:  # the server's own record
        assert store.get_model_version("ctr", 1).stage.value == "VALIDATED"

    events = _aiflow("events", "list", "--key", "ctr", "--type", "MODEL_VALIDATED", "--json", env=env)
    assert events.returncode == 0, events.stderr
    [validated] = json.loads(events.stdout)
    assert validated["sender"] == "alice"  # who authenticated, from the server's side
    assert json.loads(validated["value"])["version"] == 1

    versions = json.loads(_aiflow("models", "versions", "ctr", "--json", env=env).stdout)
    assert [(v["version"], v["stage"], v["metrics"]["auc"]) for v in versions] == [(1, "VALIDATED", 0.81)]
    assert not terminal_home.exists() or not (terminal_home / "meta.db").exists()  # nothing local

    # --db still means that database, and the two together are refused
    local = f"sqlite:///{tmp_path / 'local.db'}"
    assert "no models registered" in _aiflow("models", "list", "--db", local, env=env).stdout
    both = _aiflow("models", "list", "--db", local, "--server", curve_server.url, env=env)
    assert both.returncode == 1 and "not both" in both.stderr and "Traceback" not in both.stderr


def test_an_unlisted_key_does_not_reach_the_server_and_says_so(curve_server, tmp_path):
    keys = curve_server.keys
    create_client_keys(tmp_path / "unlisted", "mallory")  # a well-formed key pair the server does not list
    env = {**os.environ, "AIFLOW_HOME": str(tmp_path / "terminal_home"), "AIFLOW_SERVER_URL": curve_server.url,
           "AIFLOW_SERVER_KEY": str(keys / "server.key"),
           "AIFLOW_CLIENT_KEY": str(tmp_path / "unlisted" / "mallory.key_secret")}
    result = _aiflow("events", "list", "--deadline", "2", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("aiflow: error:") and curve_server.url in result.stderr, result.stderr
    no_server_key = {**env, "AIFLOW_SERVER_KEY": ""}
    result = _aiflow("models", "list", env=no_server_key)
    assert result.returncode == 1 and "AIFLOW_SERVER_KEY" in result.stderr, result.stderr
