"""The remote metadata store and uploads (DESIGN §4.8), against a real in-process ``aiflow server`` core:
an EventServer with CURVE and the server's MetadataService, a real SQLite file in the server's own home, and
the SDK connected to it from another AIFLOW_HOME (nothing shared but the connection)."""

from __future__ import annotations

import hashlib
import os
import sys
import time

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.cli.server import MetadataService
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.events.auth import allow_client, create_client_keys, create_server_keys
from aiflow_notebook.events.errors import CurveKeyError, EventRequestError, EventServerUnavailableError
from aiflow_notebook.events.server import EventServer
from aiflow_notebook.meta import InvalidStageError, StageTransitionError, UnknownModelError, default_store
from aiflow_notebook.meta.remote import RemoteStore, RemoteUnsupportedError
from aiflow_notebook.storage.blobs import BLOB_PUT, BlobRejectedError, BlobTooLargeError, RemoteBlobStore
from aiflow_notebook.testing.waiting import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Doubler:
    def predict(self, row):
        return [2 * v for v in row]


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    create_server_keys(directory)
    for name in ("alice", "bob"):
        public, _ = create_client_keys(directory, name)
        allow_client(directory, public)
    create_client_keys(tmp_path / "unlisted", "mallory")
    return directory


@pytest.fixture
def store_server(tmp_path, keys):
    home = tmp_path / "server_home"
    server = EventServer(f"sqlite:///{home / 'meta.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys))
    home.mkdir()
    service = MetadataService(server, server.db_url, home=home)
    server.start()
    service.start()
    server.home = home
    try:
        yield server
    finally:
        af.disconnect()
        service.stop()
        server.stop()


def _connect(store_server, keys, name="alice"):
    return af.connect(store_server.url, auth=(str(keys / "server.key"), str(keys / f"{name}.key_secret")))


def test_the_model_center_goes_to_the_server_and_nothing_is_written_locally(store_server, keys, aiflow_home):
    _connect(store_server, keys)
    assert isinstance(default_store(), RemoteStore) and af.connected()
    af.register_model("ctr", "click-through")
    uri = af.save_model(Doubler(), "ctr")  # uploaded into the server's blob store
    assert uri.startswith((store_server.home / "blobs").as_uri())
    v1 = af.register_model_version("ctr", uri=uri, metrics={"auc": 0.7})
    assert (v1.model, v1.version, v1.stage, v1.metrics) == ("ctr", 1, af.Stage.GENERATED, {"auc": 0.7})
    validated = af.update_model_version("ctr", 1, "VALIDATED")
    assert validated.stage == af.Stage.VALIDATED and validated.created_at == v1.created_at
    assert af.get_latest_model_version("ctr", "VALIDATED") == validated
    assert [v.version for v in af.list_model_versions("ctr")] == [1]
    assert af.get_model_version("ctr", 1).uri == uri
    with pytest.raises(StageTransitionError, match="cannot go from VALIDATED to GENERATED"):
        af.update_model_version("ctr", 1, "GENERATED")
    with pytest.raises(InvalidStageError):
        af.update_model_version("ctr", 1, "SHINY")
    with pytest.raises(UnknownModelError):
        af.get_latest_model_version("nope")
    # the stage change was published on the server's bus by its store, sent by the authenticated client
    events = EventClient(store_server.url, auth=(str(keys / "server.key"), str(keys / "bob.key_secret"))).list_events(
        key="ctr", event_type="MODEL_VALIDATED")
    assert [(e.sender, e.value and __import__("json").loads(e.value)["version"]) for e in events] == [("alice", 1)]
    # the server's job processes load the uploaded model through its blob store, hash verified
    from aiflow_notebook.engines.model_io import load_model

    assert load_model(uri).predict([1, 2]) == [2, 4]
    assert not (aiflow_home / "meta.db").exists() and not (aiflow_home / "models").exists()
    af.disconnect()
    assert not isinstance(default_store(), RemoteStore) and not af.connected()


def test_datasets_lineage_and_runs_read_remotely_and_scheduler_writes_are_refused(store_server, keys):
    _connect(store_server, keys)
    store = default_store()
    dataset = store.register_dataset("clicks", uri="s3://bucket/clicks.csv", schema={"x": "int"})
    assert store.get_dataset("clicks") == dataset and dataset.schema == {"x": "int"}
    store.register_model("m")
    store.register_model_version("m", uri="file:///elsewhere/m.pkl")
    graph = af.lineage("m", 1)
    assert [node.label for node in graph.nodes_of("model_version")] and graph.title.endswith("m v1")
    assert store.list_workflow_runs() == [] and store.count_workflow_runs() == []
    with pytest.raises(RemoteUnsupportedError, match="create_workflow_run is not available while connected"):
        store.create_workflow_run("wf")
    with pytest.raises(af.AIFlowError, match="does not exist"):
        store.get_job_run(12345)


def test_uploads_are_chunked_verified_and_an_object_already_there_is_not_sent_again(store_server, keys):
    client = _connect(store_server, keys).client
    blobs = RemoteBlobStore(client, chunk_bytes=256 * 1024)
    data = os.urandom(700 * 1024)
    uri = blobs.put(data)
    digest = hashlib.sha256(data).hexdigest()
    stored = store_server.home / "blobs" / digest[:2] / digest
    assert uri == stored.as_uri() and stored.read_bytes() == data
    calls = []
    original = client.call
    client.call = lambda method, *a, **k: calls.append(method) or original(method, *a, **k)
    try:
        assert blobs.put(data) == uri
    finally:
        client.call = original
    assert BLOB_PUT not in calls  # known by its hash: nothing uploaded
    # a chunk whose bytes do not match its hash is refused, and nothing is stored
    other = os.urandom(1000)
    answer, _ = client.call(BLOB_PUT, {"digest": hashlib.sha256(other).hexdigest(), "size": len(other),
                                       "offset": 0, "chunk_sha256": hashlib.sha256(b"x").hexdigest()}, other)
    assert answer["error"]["type"] == "BlobRejectedError" and "corrupted" in answer["error"]["message"]
    # a whole object whose bytes are not what its name says is refused too
    answer, _ = client.call(BLOB_PUT, {"digest": "0" * 64, "size": len(other), "offset": 0,
                                       "chunk_sha256": hashlib.sha256(other).hexdigest()}, other)
    assert "does not match its SHA-256" in answer["error"]["message"]
    assert not list((store_server.home / "blobs").glob("00/*"))
    with pytest.raises(BlobTooLargeError, match="larger than this server accepts"):
        _too_large(client)


def _too_large(client):
    from aiflow_notebook.storage.blobs import _raise_for

    answer, _ = client.call("blob.has", {"digest": "1" * 64, "size": 1 << 40})
    _raise_for(answer)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(store_server, keys):
    client = _connect(store_server, keys).client
    with pytest.raises(EventRequestError, match="unknown method 'store.drop_everything'"):
        client.call("store.drop_everything", {})
    with pytest.raises(EventRequestError, match="store arguments must be"):
        client.call("store.get_model", ["not", "a", "dict"])
    with pytest.raises(EventRequestError, match="bad arguments for get_model"):
        client.call("store.get_model", {"args": [], "kwargs": {"nonsense": 1}})
    answer, _ = client.call("blob.has", {"digest": "../../etc/passwd", "size": 1})
    assert "bad blob digest" in answer["error"]["message"]
    with pytest.raises(BlobRejectedError, match="bad blob digest"):
        from aiflow_notebook.storage.blobs import _raise_for

        _raise_for(answer)
    af.register_model("still-serving")
    assert af.list_model_versions("still-serving") == []


def test_an_unlisted_key_is_refused_within_the_deadline_and_events_carry_the_authenticated_name(
        store_server, keys, tmp_path):
    started = time.monotonic()
    with pytest.raises(EventServerUnavailableError, match="no answer"):
        af.connect(store_server.url, auth=(str(keys / "server.key"), str(tmp_path / "unlisted" / "mallory.key_secret")),
                   timeout=2)
    assert time.monotonic() - started < 10 and not af.connected()
    _connect(store_server, keys, "bob")
    sent = EventClient.from_environment().send_event(Event("k", "v", sender="alice"))  # claims to be alice
    assert EventClient.from_environment().list_events(key="k")[-1].sender == "bob" and sent.version


def test_the_environment_connects_a_process_with_key_file_paths_only(store_server, keys, monkeypatch, aiflow_home):
    monkeypatch.setenv("AIFLOW_SERVER_URL", store_server.url)
    monkeypatch.setenv("AIFLOW_SERVER_KEY", str(keys / "server.key"))
    monkeypatch.setenv("AIFLOW_CLIENT_KEY", str(keys / "alice.key_secret"))
    assert af.connected() and isinstance(default_store(), RemoteStore)
    assert af.register_model("from-env").name == "from-env"
    assert not (aiflow_home / "meta.db").exists()
    af.disconnect()  # overrides the environment
    assert not af.connected()
    from aiflow_notebook.events import session

    session.reset()
    os.chmod(keys / "alice.key_secret", 0o644)
    with pytest.raises(CurveKeyError, match="may be read by other users .*chmod 600"):
        default_store()
    os.chmod(keys / "alice.key_secret", 0o600)
    monkeypatch.setenv("AIFLOW_CLIENT_KEY", "x" * 40)
    with pytest.raises(CurveKeyError, match="path of a key file, not a key"):
        af.connected()


def test_the_connect_and_disconnect_magics_switch_the_whole_kernel(store_server, keys, tmp_path, aiflow_home):
    from sdk_support import close_shell, new_shell, run

    shell = new_shell(str(tmp_path / "ipython"))
    try:
        result = run(shell, f"%aiflow connect {store_server.url} --key {keys / 'server.key'} "
                            f"--client-key {keys / 'alice.key_secret'}")
        assert result.success and "models, datasets, lineage, events and runs go to" in result.stdout, result
        assert run(shell, "import aiflow_notebook as af\naf.register_model('from-magic')").success
        assert af.connected() and not (aiflow_home / "meta.db").exists()
        result = run(shell, "%aiflow disconnect")
        assert "disconnected" in result.stdout and not af.connected()
        assert af.register_model("local-now").name == "local-now" and (aiflow_home / "meta.db").exists()
        result = run(shell, f"%aiflow connect {store_server.url} --key {keys / 'server.key'} "
                            f"--client-key {tmp_path / 'unlisted' / 'mallory.key_secret'}")
        assert not af.connected() and "Traceback" not in result.stdout + result.stderr
    finally:
        close_shell()


def test_a_call_resent_after_a_timeout_runs_once_and_a_plain_bus_says_it_serves_no_calls(tmp_path):
    """The client resends a request that is not answered within 0.5 s (on a fresh socket); the server
    joins the resend to the running call, so a slow write is executed exactly once."""
    executed = []

    def slow(user, method, args, data):
        executed.append(method)
        time.sleep(1.6)  # past the client's first resends (0.5 s, then 1 s)
        return {"echo": args, "user": user}, data[::-1]

    server = EventServer(f"sqlite:///{tmp_path / 'bus.db'}", "tcp://127.0.0.1:0")
    server.serve_calls(slow)
    plain = EventServer(f"sqlite:///{tmp_path / 'plain.db'}", "tcp://127.0.0.1:0")
    with server, plain:
        client = EventClient(server.url, deadline=10)
        assert client.call("anything", {"n": 1}, b"abc") == ({"echo": {"n": 1}, "user": None}, b"cba")
        assert executed == ["anything"]
        with pytest.raises(EventRequestError, match="serves no calls"):
            EventClient(plain.url, deadline=5).call("store.get_model", {})
        client.close()


def test_a_server_extension_of_a_connected_jupyter_reruns_and_reads_logs_over_the_connection(
        tmp_path, keys, monkeypatch):
    """The REST service (what `POST runs/<id>/rerun` and the log route call) on a connected process: the
    re-run's payload is uploaded into the server's blob store (another home), the log read there."""
    from aiflow_notebook.cli.server import SchedulerService
    from aiflow_notebook.server_extension.service import AIFlowService

    home = tmp_path / "server_home"
    home.mkdir()
    server = EventServer(f"sqlite:///{home / 'meta.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys))
    store_service = MetadataService(server, server.db_url, home=home)
    server.start()
    store_service.start()
    scheduler = SchedulerService(server, server.db_url, home=home, curve_dir=keys).start()
    try:
        monkeypatch.chdir(tmp_path)
        client = _connect(server, keys).client
        with af.workflow("again"), af.job_config("only"):
            af.user_define_operation(_say_hello, name="hello", output_num=0)
        first = af.submit("again")
        assert first.wait(120) == "FINISHED"
        service = AIFlowService(default_store(), client)
        answer = service.rerun(first.run_id)
        assert answer["rerun_of"] == first.run_id and answer["run"] != first.run_id
        wait_for(lambda: default_store().get_workflow_run(answer["run"]).state == "FINISHED", timeout=120,
                 what="the re-run to finish on the server")
        assert "hello from the server" in service.job_log(answer["run"], "only", 20)["log"]
        assert not (tmp_path / "aiflow_home" / "blobs").exists()
    finally:
        af.disconnect()
        scheduler.stop()
        store_service.stop()
        server.stop()


def test_a_schedule_added_while_connected_lives_on_the_server(tmp_path, keys, monkeypatch):
    """Schedules are the server scheduler's too: the workflow is uploaded, the schedule listed there, and a
    tick runs it in the server's working directory."""
    from aiflow_notebook.cli.server import SchedulerService

    home = tmp_path / "server_home"
    home.mkdir()
    server = EventServer(f"sqlite:///{home / 'meta.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys))
    metadata = MetadataService(server, server.db_url, home=home)
    server.start()
    metadata.start()
    scheduler = SchedulerService(server, server.db_url, home=home, curve_dir=keys).start()
    try:
        monkeypatch.chdir(tmp_path)
        _connect(server, keys)
        with af.workflow("ticking"), af.job_config("only"):
            af.user_define_operation(_say_hello, name="hello", output_num=0)
        added = af.add_workflow_schedule("ticking", interval=1)
        assert [s["id"] for s in af.list_workflow_schedules("ticking")] == [added]
        wait_for(lambda: default_store().list_workflow_runs("ticking"), timeout=60,
                 what="the server's scheduler to start the scheduled workflow")
        af.delete_workflow_schedule(added)
        runs = wait_for(lambda: [r for r in default_store().list_workflow_runs("ticking") if r.state == "FINISHED"],
                        timeout=60, what="a scheduled run to finish")
        assert "hello from the server" in default_store().job_log(default_store().list_job_runs(runs[-1].id)[0].id, 5)
        assert not (tmp_path / "aiflow_home" / "blobs").exists()
    finally:
        af.disconnect()
        scheduler.stop()
        metadata.stop()
        server.stop()


def _say_hello():
    print("hello from the server", flush=True)


def test_panels_follow_the_connected_server(store_server, keys, aiflow_home):
    """The model and event panels of a connected process show the server's versions and events live, and
    a panel button changes the stage on the server (no embedded bus is started)."""
    from aiflow_notebook.widgets import EventPanel, ModelPanel

    _connect(store_server, keys)
    af.register_model("p")
    af.register_model_version("p", uri="file:///elsewhere/p1.pkl")
    models, events = ModelPanel("p"), EventPanel(key="p")
    try:
        assert [(v["version"], v["stage"]) for v in models.versions] == [(1, "GENERATED")]
        models.set_stage("p", 1, "VALIDATED")
        other = EventClient(store_server.url, auth=(str(keys / "server.key"), str(keys / "bob.key_secret")))
        assert other.list_events(key="p", event_type="MODEL_VALIDATED")[-1].sender == "alice"
        af.register_model_version("p", uri="file:///elsewhere/p2.pkl")
        wait_for(lambda: [v["version"] for v in models.versions] == [2, 1], timeout=30,
                 what="the model panel to show version 2 registered on the server")
        wait_for(lambda: {e["event_type"] for e in events.events} >= {"MODEL_VALIDATED", "MODEL_GENERATED"},
                 timeout=30, what="the event panel to show the server's model events")
        assert not (aiflow_home / "meta.db").exists() and not (aiflow_home / "sockets").exists()
        other.close()
    finally:
        models.close()
        events.close()


def test_malformed_calls_are_refused_on_the_wire_and_the_server_keeps_serving(store_server, keys):
    import zmq

    from aiflow_notebook.events import protocol
    from aiflow_notebook.events.auth import CurveAuth
    from aiflow_notebook.events.protocol import Kind

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    CurveAuth.coerce((str(keys / "server.key"), str(keys / "alice.key_secret"))).apply(sock)
    sock.connect(store_server.url)
    try:
        for request_id, body, code in ((1, b"\x00\x00\x10\x00{}", "truncated"),
                                       (2, protocol.join_body({"method": "x"}), "bad-body"),
                                       (3, protocol.join_body([1, 2]), "bad-body"),
                                       (4, b"\x00\x00\x00\x02\xff\xfe", "bad-body")):
            sock.send(protocol.frame(Kind.CALL, request_id, body))
            assert sock.poll(10_000), f"no answer to malformed call {request_id}"
            kind, answered = protocol.read_header(reply := sock.recv())
            assert (kind, answered) == (Kind.ERROR, request_id)
            assert protocol.decode_error(reply[protocol.HEADER_SIZE:])[0] == code
    finally:
        sock.close()
    _connect(store_server, keys)
    assert af.register_model("after-garbage").name == "after-garbage"


def test_a_flood_of_calls_is_held_back_with_a_retryable_answer(tmp_path):
    """A client that pipelines more calls than the server keeps waiting gets "unavailable" (the event
    client backs off and retries it) instead of growing the server's memory without bound."""
    import threading

    import zmq

    from aiflow_notebook.events import protocol
    from aiflow_notebook.events.calls import MAX_PENDING_CALLS
    from aiflow_notebook.events.protocol import Kind

    release = threading.Event()

    def blocked(user, method, args, data):
        release.wait(30)
        return {}, b""

    server = EventServer(f"sqlite:///{tmp_path / 'bus.db'}", "tcp://127.0.0.1:0")
    server.serve_calls(blocked)
    with server:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(server.url)
        try:
            total = MAX_PENDING_CALLS + 40
            for n in range(1, total + 1):
                sock.send(protocol.frame(Kind.CALL, n, protocol.join_body({"call": f"c{n}", "method": "m"})))
            refused = []
            while len(refused) < 40 and sock.poll(10_000):
                kind, request_id = protocol.read_header(reply := sock.recv())
                assert kind == Kind.ERROR
                refused.append((request_id, protocol.decode_error(reply[protocol.HEADER_SIZE:])[0]))
            assert {code for _, code in refused} == {"unavailable"} and len(refused) == 40
            release.set()
            answered = sum(1 for _ in range(MAX_PENDING_CALLS) if sock.poll(10_000) and sock.recv())
            assert answered == MAX_PENDING_CALLS
        finally:
            release.set()
            sock.close()
