"""Shared fixtures, each defined once: an isolated AIFLOW_HOME and a clean SDK per test; real servers (a
PostgreSQL server and a Flink cluster per session; per test an `aiflow server` process, one with CURVE, an
embedded scheduler, a metadata store, an IPython shell with the magics); and "no process of ours left
behind" checks scoped to this session's processes."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from aiflow_notebook.meta import set_default_store
from aiflow_notebook.sandbox.postgres import PostgresServer, postgres_bin_dir
from aiflow_notebook.testing.processes import SESSION_VARIABLE, mark_session, wait_no_process_left
from aiflow_notebook.testing.sdk import reset_sdk

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
if os.environ.get("PYTEST_XDIST_WORKER"):
    # A worker of `pytest -n`: it inherited the controller's mark, but "no process of ours left" must not
    # count the processes of the test that the other worker runs at the same time.
    os.environ.pop(SESSION_VARIABLE, None)
mark_session()  # before any fixture starts a process: every process this session starts carries the mark


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the run for `make test`'s two workers (`pytest -n 2 --dist loadgroup`): the slow tests first,
    the longest (by their timeout mark) at the very front, so that no worker starts a long test when the
    other one is nearly done; and every test of the session's Flink cluster in one group, on one worker,
    so that the cluster is started once."""
    def weight(item: pytest.Item) -> tuple[bool, float]:
        timeout = item.get_closest_marker("timeout")
        return item.get_closest_marker("slow") is None, -(timeout.args[0] if timeout and timeout.args else 0)

    items.sort(key=weight)  # stable: within one weight, the files' order
    for item in items:
        if "flink_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("flink_cluster"))


@pytest.fixture(autouse=True)
def aiflow_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own AIFLOW_HOME, so nothing touches ~/.aiflow or leaks between tests."""
    home = tmp_path / "aiflow_home"
    monkeypatch.setenv("AIFLOW_HOME", str(home))
    monkeypatch.delenv("AIFLOW_META_URL", raising=False)
    monkeypatch.delenv("AIFLOW_EVENT_URL", raising=False)
    monkeypatch.delenv("AIFLOW_SCHEDULER_URL", raising=False)  # set in a JupyterLab terminal: not the tests' scheduler
    for variable in ("AIFLOW_SERVER_URL", "AIFLOW_SERVER_KEY", "AIFLOW_CLIENT_KEY"):  # a connected shell: not ours
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    set_default_store(None)
    yield home
    set_default_store(None)


@pytest.fixture(autouse=True)
def fresh_sdk():
    """Every test starts with an empty SDK session (no workflows, no embedded scheduler, not connected)
    and leaves none behind."""
    reset_sdk()
    yield
    reset_sdk()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's package) on a free loopback port, stopped after the session."""
    if postgres_bin_dir() is None:
        pytest.fail("PostgreSQL is not installed; run `make test` (it installs it) or scripts/setup.sh --test")
    server = PostgresServer(durable=False).start()
    try:
        yield server
    finally:
        server.stop()


_db_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def meta_url(request, tmp_path) -> str:
    """A fresh, empty metadata database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(scope="session")
def flink_cluster():
    """A real standalone Flink cluster (1 JobManager + 2 TaskManagers with 2 slots each, small JVMs), shared
    by the modules that test "on a real cluster" (≈ 15 s to start and stop). Its JVMs must be gone after."""
    import psutil

    from aiflow_notebook.sandbox.flink_cluster import StandaloneFlinkCluster

    cluster = StandaloneFlinkCluster(taskmanagers=2, slots=2, jobmanager_mb=768, taskmanager_mb=1536).start()
    jvms = cluster.pids()
    assert len(jvms) == 3, jvms
    try:
        yield cluster
    finally:
        cluster.stop()
        assert [pid for pid in jvms if psutil.pid_exists(pid)] == [], "a JVM of the cluster outlived stop()"


@pytest.fixture
def no_dl_child_left_behind():
    """After a dl_on_flink test: no node child process (of this session) outlived its job."""
    yield
    from dl_on_flink.testing import CHILD_MODULE

    assert wait_no_process_left(cmdline=CHILD_MODULE) == [], "a node child process outlived its job"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran jobs shows the tail of each job's log in its report: on CI, where the
    temporary AIFLOW_HOME is gone afterwards, that is the only way to see why a job did what it did."""
    outcome = yield
    report = outcome.get_result()
    home = item.funcargs.get("aiflow_home") if hasattr(item, "funcargs") else None
    if not report.failed or not isinstance(home, Path) or not (home / "runs").is_dir():
        return
    for log in sorted((home / "runs").glob("*/*.log"), key=lambda p: p.stat().st_mtime)[-12:]:
        lines = log.read_text(errors="replace").splitlines()
        report.sections.append((f"job log {log.relative_to(home)} (last 60 lines)", "\n".join(lines[-60:])))


# --- the servers and sessions a test works against ------------------------------------------------------------


@pytest.fixture
def store(meta_url):
    """A metadata store over a fresh database (SQLite, then PostgreSQL: see ``meta_url``)."""
    from aiflow_notebook.meta import MetadataStore

    with MetadataStore(meta_url) as store:
        yield store


@pytest.fixture
def scheduler(aiflow_home):
    """The embedded scheduler of this test's AIFLOW_HOME; afterwards no job process and no dl_on_flink node
    child of it may be left."""
    from aiflow_notebook.scheduler import EmbeddedScheduler
    from dl_on_flink.testing import CHILD_MODULE

    with EmbeddedScheduler() as embedded:
        yield embedded
    leftovers = (wait_no_process_left(cmdline=str(aiflow_home / "runs"))
                 + wait_no_process_left(cmdline=CHILD_MODULE, home=aiflow_home))
    assert leftovers == [], "a job process or a node child outlived its run"


@pytest.fixture
def server(tmp_path):
    """A real `aiflow server start` process on a free loopback port, its event log in ``tmp_path/events.db``."""
    from aiflow_notebook.testing.event_server import EventServerProcess

    with EventServerProcess(f"sqlite:///{tmp_path / 'events.db'}") as process:
        yield process


CURVE_CLIENTS = ("alice", "bob")  # the clients the curve_server fixture lists


@pytest.fixture
def curve_server(tmp_path):
    """A real `aiflow server start --curve` process. ``.keys``: its key directory (``server.key``, and a listed
    key pair ``NAME.key_secret`` per name of :data:`CURVE_CLIENTS`); ``.home``: its home (database ``meta.db``,
    job logs, blobs). Afterwards this process is disconnected and none of the server's jobs may be left."""
    import aiflow_notebook as af
    from aiflow_notebook.events.auth import allow_client, create_client_keys, create_server_keys
    from aiflow_notebook.testing.event_server import EventServerProcess

    keys, home = tmp_path / "keys", tmp_path / "server_home"
    create_server_keys(keys)
    for name in CURVE_CLIENTS:
        public, _secret = create_client_keys(keys, name)
        allow_client(keys, public)
    home.mkdir()
    server = EventServerProcess(f"sqlite:///{home / 'meta.db'}", extra_args=["--curve", str(keys), "--home", str(home)],
                                env={"AIFLOW_HOME": str(home)}).start()
    server.keys, server.home = keys, home
    try:
        yield server
    finally:
        af.disconnect()
        server.stop()
        assert wait_no_process_left(cmdline=str(home / "runs"), timeout=30) == [], "the server's jobs outlived it"


@pytest.fixture
def shell(tmp_path):
    """A real IPython InteractiveShell with ``%load_ext kernel_magics`` (history off, a private IPython dir)."""
    from sdk_support import close_shell, new_shell

    shell = new_shell(str(tmp_path / "ipython"))
    yield shell
    close_shell()  # the fresh_sdk fixture then stops the embedded scheduler, as the kernel's exit does
