"""The `aiflow` command line, run as a real subprocess (the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiflow_notebook.meta import MetadataStore
from aiflow_notebook.storage.database import head_revision

AIFLOW = str(Path(sys.executable).parent / "aiflow")


def aiflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([AIFLOW, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"aiflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_help_and_version():
    assert "models" in aiflow("--help").stdout and "db" in aiflow("--help").stdout
    assert aiflow("version").stdout.strip() == "aiflow-notebook 0.1.0"


def test_db_upgrade_creates_then_reports_current(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    head = head_revision()
    assert "upgraded empty -> revision 0001" in aiflow("db", "upgrade", "0001", "--db", url).stdout
    assert f"upgraded 0001 -> revision {head}" in aiflow("db", "upgrade", "--db", url).stdout
    assert f"already at revision {head}" in aiflow("db", "upgrade", "--db", url).stdout
    assert f"revision {head} (newest: {head})" in aiflow("db", "current", "--db", url).stdout


def test_models_list_versions_and_stage(aiflow_home):
    with MetadataStore() as store:  # the default store under AIFLOW_HOME, which the CLI also uses
        store.register_model("ctr")
        store.register_model_version("ctr", uri="file:///m/1", metrics={"auc": 0.7})
        store.register_model_version("ctr", uri="file:///m/2", metrics={"auc": 0.8})
    table = aiflow("models", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "LATEST_VERSION", "LATEST_STAGE", "CREATED_AT"]
    assert table.splitlines()[1].split()[:3] == ["ctr", "2", "GENERATED"]
    assert "ctr version 2 is now VALIDATED" in aiflow("models", "stage", "ctr", "2", "validated").stdout
    versions = json.loads(aiflow("models", "versions", "ctr", "--json").stdout)
    assert [(v["version"], v["stage"], v["metrics"]["auc"]) for v in versions] == [
        (1, "GENERATED", 0.7), (2, "VALIDATED", 0.8)]
    text = aiflow("models", "versions", "ctr", "--stage", "VALIDATED").stdout
    assert "file:///m/2" in text and "file:///m/1" not in text


def test_errors_are_one_line_with_exit_code_1(aiflow_home):
    result = aiflow("models", "versions", "ghost", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "aiflow: error: model 'ghost' is not registered; call register_model('ghost') first"
    result = aiflow("models", "stage", "ghost", "1", "BOGUS", check=False)
    assert result.returncode == 1 and "unknown stage 'BOGUS'" in result.stderr
    result = aiflow("models", "list", "--db", "nonsense://", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert aiflow("models", "stage", "ctr", check=False).returncode == 2  # argparse usage error


def test_a_stage_changed_from_the_terminal_is_announced_on_the_bus_of_aiflow_event_url(aiflow_home, monkeypatch):
    from aiflow_notebook.events import EventClient, EventServer

    with MetadataStore() as store:  # the default store under AIFLOW_HOME; the bus keeps its log there too
        store.register_model("ctr")
        store.register_model_version("ctr", uri="file:///m/1")
    with EventServer(store_url := f"sqlite:///{aiflow_home / 'meta.db'}", bind="tcp://127.0.0.1:0").start() as server:
        assert server.db_url == store_url
        monkeypatch.setenv("AIFLOW_EVENT_URL", server.url)
        assert "ctr version 1 is now VALIDATED" in aiflow("models", "stage", "ctr", "1", "VALIDATED").stdout
        with EventClient(server.url) as client:
            [event] = client.list_events(key="ctr", event_type="MODEL_VALIDATED")
        assert json.loads(event.value)["version"] == 1


@pytest.mark.slow  # waits out the bus's 30 s deadline
def test_a_stage_change_whose_event_cannot_be_announced_says_the_change_was_made(aiflow_home, monkeypatch):
    from aiflow_notebook.core.ports import free_port

    with MetadataStore() as store:
        store.register_model("ctr")
        store.register_model_version("ctr", uri="file:///m/1")
    monkeypatch.setenv("AIFLOW_EVENT_URL", f"tcp://127.0.0.1:{free_port()}")  # nobody listens there
    result = aiflow("models", "stage", "ctr", "1", "VALIDATED", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ctr version 1 is now VALIDATED" in result.stderr and "event was not announced" in result.stderr
    with MetadataStore() as store:
        assert store.get_model_version("ctr", 1).stage.value == "VALIDATED"
