"""Security by default, through the public entry points, with real processes.

- A CURVE `aiflow server start`: its jobs have a listed identity of their own (prep -> train -> serve,
  restarted by MODEL_VALIDATED, driven from this process as the notebook); only admitted clients may
  submit or stop runs.
- The embedded scheduler is out of reach of other local users (a real connection attempt as `nobody`).
- A scheduler runs payloads only from its own blob store, hash verified (at submission and in the job).
- A database password never reaches job spec files, job environments, logs or events.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

import aiflow_notebook as af
from aiflow_notebook.cli import main
from aiflow_notebook.core.vocabulary import (
    CONTROL_NAMESPACE,
    RUN_CREATED,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
    command_key,
)
from aiflow_notebook.events import CurveAuth, Event, EventClient
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta import MetadataStore
from aiflow_notebook.scheduler import EmbeddedScheduler, SchedulerClient, SchedulerError
from aiflow_notebook.storage.blobs import LocalBlobStore
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)


# --- job functions (pickled by value into the jobs) ---------------------------------------------------


def prep_rows():
    return [[1.0], [2.0], [3.0]]


class Mean:
    def __init__(self, value):
        self.value = value

    def predict(self, row):
        return self.value


def fit_mean(rows):
    return Mean(sum(float(r[0]) for r in rows) / len(rows))


def serve_until_stopped(context):
    marker = Path(context.properties["marker"])
    with marker.open("a") as fh:
        fh.write(f"started {os.getpid()}\n")
    while True:
        time.sleep(0.1)


def wait_for_go(context):
    marker = Path(context.properties["marker"])
    with marker.open("a") as fh:
        fh.write(f"waiting {os.getpid()}\n")
    while not Path(context.properties["go"]).exists():
        time.sleep(0.05)


def write_marker(context):
    Path(context.properties["marker"]).write_text("ran")


def train_and_register(rows):
    return Mean(len(rows))


# --- helpers ------------------------------------------------------------------------------------------


def _job_pids(home: Path) -> list[int]:
    """Job processes started under this AIFLOW_HOME (not their launchers, whose command lines name them too)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[1:3] == ["-m", "aiflow_notebook.engines.job_main"] and any(str(home) in p for p in cmdline) \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


def _scheduler(client: EventClient, server) -> SchedulerClient:
    """The server's scheduler for ``client``, submitting through the server's blob store (a shared file
    system, as on one machine)."""
    return SchedulerClient(client, blob_store=LocalBlobStore(server.home / "blobs"))


def _listed(keys: Path, name: str) -> CurveAuth:
    return CurveAuth(CurveAuth.coerce(keys / "server.key").server_public_key, keys / f"{name}.key_secret")


def _send_submit(client: EventClient, uri: str, name: str = "default") -> Event:
    """Send a SUBMIT_WORKFLOW for ``uri`` as any client could, and wait for the scheduler's answer."""
    request_id = uuid.uuid4().hex
    sent = client.send_event(Event(key=command_key(name), event_type=SUBMIT_WORKFLOW, namespace=CONTROL_NAMESPACE,
                                   value=json.dumps({"uri": uri, "request_id": request_id, "cwd": os.getcwd()})))

    def answer():
        for event in client.list_events(key=command_key(name), namespace=CONTROL_NAMESPACE,
                                        since_version=sent.version):
            if event.event_type in (RUN_CREATED, SUBMIT_REJECTED) and \
                    json.loads(event.context or "{}").get("request_id") == request_id:
                return event
        return None

    return wait_for(answer, 60, f"the scheduler's answer to the submission of {uri}")


# --- CURVE server: jobs with their own identity; only admitted clients command ------------------------


@pytest.mark.slow
def test_prep_train_serve_on_a_curve_server_with_jobs_of_their_own_identity(curve_server, tmp_path):
    server, keys = curve_server, curve_server.keys
    marker = tmp_path / "serve.txt"
    with af.workflow("curvy"):
        with af.job_config("prep"):
            af.write_dataset(af.user_define_operation(prep_rows, name="rows"), "raw", uri=str(tmp_path / "raw.json"))
        with af.job_config("train"):
            af.train(af.read_dataset("raw"), fit_mean, model="mean", name="fit")
        with af.job_config("serve"):
            af.user_define_operation(serve_until_stopped, name="serve", properties={"marker": str(marker)})
        af.action_on_job_status("train", upstream="prep")
        af.action_on_job_status("serve", upstream="train")
        af.action_on_model_version_event("serve", model="mean", event_type="MODEL_VALIDATED", action="RESTART")
    notebook = EventClient(server.url, auth=_listed(keys, "alice"), deadline=60)
    try:
        run = _scheduler(notebook, server).submit(af.compile("curvy"))
        generated = wait_for(lambda: notebook.list_events("mean", event_type="MODEL_GENERATED"), 120,
                             "the training job to publish MODEL_GENERATED under CURVE")
        assert [e.sender for e in generated] == ["aiflow-jobs"]  # the jobs' listed identity, not a claim
        wait_for(lambda: marker.exists() and marker.read_text().count("started") == 1, 120, "serve to start")
        store = MetadataStore(server.db_url, publisher=EventBusPublisher(notebook))
        version = json.loads(generated[0].value)
        version = version["version"] if isinstance(version, dict) else int(version)
        store.update_model_version("mean", version, "VALIDATED")
        store.close()
        wait_for(lambda: marker.read_text().count("started") == 2, 120, "serve to restart on MODEL_VALIDATED")
        validated = notebook.list_events("mean", event_type="MODEL_VALIDATED")
        assert [e.sender for e in validated] == ["alice"]
        assert {e.sender for e in run.job_events()} == {"scheduler"}
        assert run.jobs() == {"prep": "FINISHED", "train": "FINISHED", "serve": "RUNNING"}
        assert run.stop() == "KILLED"
        jobs_key = keys / "aiflow-jobs.key_secret"
        assert stat.S_IMODE(jobs_key.stat().st_mode) == 0o600
        assert (keys / "clients" / "aiflow-jobs.key").exists()
    finally:
        notebook.close()


@pytest.mark.slow
def test_only_admitted_clients_may_submit_or_stop_runs(curve_server, tmp_path):
    server, keys = curve_server, curve_server.keys
    marker, go = tmp_path / "hold.txt", tmp_path / "go"
    with af.workflow("held"):
        with af.job_config("hold"):
            af.user_define_operation(wait_for_go, name="hold", properties={"marker": str(marker), "go": str(go)})
    alice = EventClient(server.url, auth=_listed(keys, "alice"), deadline=60)
    bob = EventClient(server.url, auth=_listed(keys, "bob"), deadline=60)
    try:
        run = _scheduler(alice, server).submit(af.compile("held"))
        wait_for(lambda: marker.exists(), 120, "the held job to start")
        bob.latest_version()  # bob connects while listed ...
        os.unlink(keys / "clients" / "bob.key")  # ... and is then removed from the list
        with pytest.raises(SchedulerError, match="'bob' is not an admitted client"):
            _scheduler(bob, server).submit(af.compile("held"))
        bob.send_event(Event(key=command_key("default"), event_type=STOP_WORKFLOW_RUN, namespace=CONTROL_NAMESPACE,
                             value=json.dumps({"run": run.run_id})))
        barrier = _scheduler(alice, server).submit(af.compile("held"))  # handled after bob's stop request
        assert barrier.run_id != run.run_id
        assert run.status() == "RUNNING" and run.jobs() == {"hold": "RUNNING"}
        go.touch()
        assert run.wait(120) == "FINISHED"
        assert barrier.wait(120) == "FINISHED"
    finally:
        alice.close()
        bob.close()


# --- the embedded scheduler: only its own user can reach it -------------------------------------------

def _probe(url: str, user: str | None = None) -> str:
    """Try a real connection to the bus's request socket, as ``user`` (a forked child that drops to that
    uid and only makes the connect system call), or as ourselves."""
    import pwd
    import socket

    "localhost".encode("idna")  # load the codec a TCP connect needs now: the child may not read the stdlib
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level locks touched, only syscalls, then _exit
        try:
            if user is not None:
                entry = pwd.getpwnam(user)
                os.setgroups([])
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
            if url.startswith("ipc://"):
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(url[len("ipc://"):])
            else:
                host, port = url[len("tcp://"):].rsplit(":", 1)
                sock = socket.create_connection((host, int(port)), timeout=5)
            os.write(write, b"connected")
        except OSError as exc:
            os.write(write, f"refused {type(exc).__name__}".encode())
        except BaseException as exc:  # noqa: BLE001 - say what went wrong instead of nothing
            os.write(write, f"probe failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as fh:
        return fh.read().decode()


@pytest.mark.parametrize("home_length", ["short", "too-long-for-a-socket-path"])
def test_the_embedded_scheduler_is_out_of_reach_of_other_local_users(monkeypatch, home_length):
    if os.geteuid() != 0:
        pytest.skip("needs root to try the connection as another user (nobody)")
    base = Path(tempfile.mkdtemp(prefix="aiflow-sec-"))
    os.chmod(base, 0o755)  # everyone may enter AIFLOW_HOME's parent: only the sockets' own directory protects
    home = base / ("h" if home_length == "short" else "h" * 120)
    home.mkdir(mode=0o755)
    monkeypatch.setenv("AIFLOW_HOME", str(home))
    try:
        with EmbeddedScheduler() as embedded:
            url = embedded.event_url
            assert _probe(url) == "connected"  # the kernel's own user gets in ...
            assert _probe(url, user="nobody") == "refused PermissionError"  # ... another user does not
            assert url.startswith("ipc://")
            socket_path = Path(url[len("ipc://"):])
            directory = socket_path.parent
            if home_length == "short":
                assert directory == home / "sockets"
            else:
                assert len(str(home / "sockets" / socket_path.name)) > 107 and not directory.is_relative_to(home)
            assert directory.stat().st_uid == os.geteuid()
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            for path in (socket_path, Path(str(socket_path) + ".pub")):
                assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
            with EventClient(url, deadline=20) as client:  # and it works as a bus
                assert client.send_event(Event("k", "v")).version >= 1
        assert not socket_path.exists()  # the sockets go with the server
        if home_length != "short":
            assert not directory.exists()  # and so does the fallback directory
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# --- payloads only from the scheduler's blob store ----------------------------------------------------


def _marker_workflow(name: str, marker: Path):
    with af.workflow(name):
        with af.job_config("only"):
            af.user_define_operation(write_marker, name="mark", properties={"marker": str(marker)})
    return af.compile(name)


def test_a_submission_is_refused_unless_its_payload_is_an_intact_object_of_the_blob_store(tmp_path, aiflow_home):
    evil_marker = tmp_path / "evil.txt"
    evil = _marker_workflow("evil", evil_marker).to_bytes()
    outside = tmp_path / "outside.json"
    outside.write_bytes(evil)
    with EmbeddedScheduler() as embedded:
        store = embedded.scheduler.blobs
        good_uri = store.put(_marker_workflow("good", tmp_path / "good.txt").to_bytes())
        tampered_uri = store.put(_marker_workflow("innocent", tmp_path / "innocent.txt").to_bytes())
        Path(tampered_uri[len("file://"):]).write_bytes(evil)  # altered after its upload
        traversal = f"file://{store.root}/{good_uri.rsplit('/', 2)[1]}/../../../outside.json"
        os.symlink(outside, store.root / "zz")
        for uri in ("file:///etc/passwd", outside.as_uri(), tampered_uri, traversal, f"file://{store.root}/zz",
                    "http://example.com/workflow.json"):
            answer = _send_submit(embedded.client, uri)
            assert answer.event_type == SUBMIT_REJECTED, f"{uri} was accepted"
            assert uri in answer.value or uri.replace("file://", "") in answer.value, answer.value
        run = embedded.submit(_marker_workflow("barrier", tmp_path / "barrier.txt"))  # after all of the above
        assert run.wait(90) == "FINISHED"
        assert not evil_marker.exists() and not (tmp_path / "innocent.txt").exists()
        accepted = [e for e in embedded.client.list_events(key=command_key("default"), event_type=RUN_CREATED)]
        assert [json.loads(e.value)["workflow"] for e in accepted] == ["barrier"]


def test_a_job_verifies_its_payload_before_unpickling_it(tmp_path, aiflow_home):
    marker, go = tmp_path / "first.txt", tmp_path / "go"
    with af.workflow("two_steps"):
        with af.job_config("first"):
            af.user_define_operation(wait_for_go, name="first", properties={"marker": str(marker), "go": str(go)})
        with af.job_config("second"):
            af.user_define_operation(write_marker, name="second", properties={"marker": str(tmp_path / "second.txt")})
        af.action_on_job_status("second", upstream="first")
    workflow = af.compile("two_steps")
    evil_marker = tmp_path / "evil.txt"
    with EmbeddedScheduler() as embedded:
        run = embedded.submit(workflow)
        wait_for(lambda: marker.exists(), 90, "the first job to start")
        uri = embedded.scheduler.blobs.put(workflow.to_bytes())
        with af.workflow("two_steps_evil"):  # same job names, other code: what an attacker would swap in
            with af.job_config("first"):
                af.user_define_operation(write_marker, name="first", properties={"marker": str(evil_marker)})
            with af.job_config("second"):
                af.user_define_operation(write_marker, name="second", properties={"marker": str(evil_marker)})
            af.action_on_job_status("second", upstream="first")
        Path(uri[len("file://"):]).write_bytes(af.compile("two_steps_evil").to_bytes())
        go.touch()
        assert run.wait(90) == "FAILED"
        assert uri in run.errors()["second"] and "altered" in run.errors()["second"]
        assert not evil_marker.exists() and not (tmp_path / "second.txt").exists()


# --- no secrets on disk -------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_the_database_password_reaches_no_file_environment_log_or_event(postgres, tmp_path, aiflow_home):
    password = secrets.token_hex(16)
    url = postgres.create_password_database(f"sec{os.getpid()}", password)
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password"):  # the password is really required
        psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=sec{os.getpid()} dbname=sec{os.getpid()}")
    marker, go = tmp_path / "hold.txt", tmp_path / "go"
    with af.workflow("secretive"):
        with af.job_config("train"):
            af.train(af.user_define_operation(prep_rows, name="rows"), train_and_register, model="counted",
                     name="fit")
        with af.job_config("hold"):
            af.user_define_operation(wait_for_go, name="hold", properties={"marker": str(marker), "go": str(go)})
        af.action_on_job_status("hold", upstream="train")
    # The URL goes in the server's own environment: a command line (--db) is visible to every local user.
    server = EventServerProcess(None, env={"AIFLOW_META_URL": url}).start()
    try:
        with EventClient(server.url, deadline=60) as client:
            run = SchedulerClient(client).submit(af.compile("secretive"))
            wait_for(lambda: marker.exists(), 120, "the second job to start")
            pids = _job_pids(aiflow_home)
            assert pids, "no job process found"
            for pid in pids + [psutil.Process(pid).parent().pid for pid in pids]:  # jobs and their launchers
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert b"AIFLOW_META_URL=postgresql" in environ
                assert [v for v in environ.split(b"\0") if password.encode() in v] == [], \
                    Path(f"/proc/{pid}/cmdline").read_bytes()
                assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            go.touch()
            assert run.wait(120) == "FINISHED", run.errors()
            events = client.list_events()
            assert events and not [e for e in events if password in json.dumps(e.to_dict())]
        with MetadataStore(url) as store:  # the job got the password: it registered its model
            assert [v.version for v in store.list_model_versions("counted")] == [1]
    finally:
        server.stop()
    assert password not in server.log()
    files = [p for p in aiflow_home.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".spec.json") for p in files)
    leaked = [p for p in files if password.encode() in p.read_bytes()]
    assert leaked == []
    runs = aiflow_home / "runs"
    for path in [runs, *runs.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path} is {oct(path.stat().st_mode)}"


def test_jobs_of_the_embedded_scheduler_ignore_the_kernels_keys_for_another_bus(tmp_path, monkeypatch):
    """A kernel that also talks to a CURVE server (its keys in the environment) must not hand them to the
    jobs of its embedded scheduler, whose bus has no CURVE: the training job still publishes its model."""
    keys = tmp_path / "elsewhere"
    assert main(["server", "keys", str(keys)]) == 0
    assert main(["server", "keys", str(keys), "--client", "me"]) == 0
    monkeypatch.setenv("AIFLOW_EVENT_SERVER_KEY", str(keys / "server.key"))
    monkeypatch.setenv("AIFLOW_EVENT_CLIENT_KEY", str(keys / "me.key_secret"))
    with af.workflow("local_training"):
        with af.job_config("train"):
            af.train(af.user_define_operation(prep_rows, name="rows"), fit_mean, model="local_mean", name="fit")
    with EmbeddedScheduler() as embedded:
        run = embedded.submit(af.compile("local_training"))
        assert run.wait(120) == "FINISHED", run.errors()
        assert [e.event_type for e in embedded.client.list_events("local_mean")] == ["MODEL_GENERATED"]
