"""The remote metadata store and uploads (DESIGN §4.8), against a real in-process ``aiflow server`` core:
an EventServer with CURVE and the server's StoreService, a real SQLite file in the server's own home, and
the SDK connected to it from another AIFLOW_HOME (nothing shared but the connection)."""

from __future__ import annotations

import hashlib
import os
import sys
import time

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.blobs import BLOB_PUT, BlobRejectedError, BlobTooLargeError, RemoteBlobStore
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.events.auth import allow_client, create_client_keys, create_server_keys
from aiflow_notebook.events.errors import CurveKeyError, EventRequestError, EventServerUnavailableError
from aiflow_notebook.events.server import EventServer
from aiflow_notebook.meta import InvalidStageError, StageTransitionError, UnknownModelError, default_store
from aiflow_notebook.meta.remote import RemoteStore, RemoteUnsupportedError
from aiflow_notebook.server import StoreService

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
def server(tmp_path, keys):
    home = tmp_path / "server_home"
    server = EventServer(f"sqlite:///{home / 'meta.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys))
    home.mkdir()
    service = StoreService(server, server.db_url, home=home)
    server.start()
    service.start()
    server.home = home
    try:
        yield server
    finally:
        af.disconnect()
        service.stop()
        server.stop()


def _connect(server, keys, name="alice"):
    return af.connect(server.url, auth=(str(keys / "server.key"), str(keys / f"{name}.key_secret")))


def test_the_model_center_goes_to_the_server_and_nothing_is_written_locally(server, keys, aiflow_home):
    _connect(server, keys)
    assert isinstance(default_store(), RemoteStore) and af.connected()
    af.register_model("ctr", "click-through")
    uri = af.save_model(Doubler(), "ctr")  # uploaded into the server's blob store
    assert uri.startswith((server.home / "blobs").as_uri())
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
    events = EventClient(server.url, auth=(str(keys / "server.key"), str(keys / "bob.key_secret"))).list_events(
        key="ctr", event_type="MODEL_VALIDATED")
    assert [(e.sender, e.value and __import__("json").loads(e.value)["version"]) for e in events] == [("alice", 1)]
    # the server's job processes load the uploaded model through its blob store, hash verified
    from aiflow_notebook.engines.model_io import load_model

    assert load_model(uri).predict([1, 2]) == [2, 4]
    assert not (aiflow_home / "meta.db").exists() and not (aiflow_home / "models").exists()
    af.disconnect()
    assert not isinstance(default_store(), RemoteStore) and not af.connected()


def test_datasets_lineage_and_runs_read_remotely_and_scheduler_writes_are_refused(server, keys):
    _connect(server, keys)
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


def test_uploads_are_chunked_verified_and_an_object_already_there_is_not_sent_again(server, keys):
    client = _connect(server, keys).client
    blobs = RemoteBlobStore(client, chunk_bytes=256 * 1024)
    data = os.urandom(700 * 1024)
    uri = blobs.put(data)
    digest = hashlib.sha256(data).hexdigest()
    stored = server.home / "blobs" / digest[:2] / digest
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
    assert not list((server.home / "blobs").glob("00/*"))
    with pytest.raises(BlobTooLargeError, match="larger than this server accepts"):
        _too_large(client)


def _too_large(client):
    from aiflow_notebook.blobs import _raise_for

    answer, _ = client.call("blob.has", {"digest": "1" * 64, "size": 1 << 40})
    _raise_for(answer)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server, keys):
    client = _connect(server, keys).client
    with pytest.raises(EventRequestError, match="unknown method 'store.drop_everything'"):
        client.call("store.drop_everything", {})
    with pytest.raises(EventRequestError, match="store arguments must be"):
        client.call("store.get_model", ["not", "a", "dict"])
    with pytest.raises(EventRequestError, match="bad arguments for get_model"):
        client.call("store.get_model", {"args": [], "kwargs": {"nonsense": 1}})
    answer, _ = client.call("blob.has", {"digest": "../../etc/passwd", "size": 1})
    assert "bad blob digest" in answer["error"]["message"]
    with pytest.raises(BlobRejectedError, match="bad blob digest"):
        from aiflow_notebook.blobs import _raise_for

        _raise_for(answer)
    af.register_model("still-serving")
    assert af.list_model_versions("still-serving") == []


def test_an_unlisted_key_is_refused_within_the_deadline_and_events_carry_the_authenticated_name(
        server, keys, tmp_path):
    started = time.monotonic()
    with pytest.raises(EventServerUnavailableError, match="no answer"):
        af.connect(server.url, auth=(str(keys / "server.key"), str(tmp_path / "unlisted" / "mallory.key_secret")),
                   timeout=2)
    assert time.monotonic() - started < 10 and not af.connected()
    _connect(server, keys, "bob")
    sent = EventClient.from_environment().send_event(Event("k", "v", sender="alice"))  # claims to be alice
    assert EventClient.from_environment().list_events(key="k")[-1].sender == "bob" and sent.version


def test_the_environment_connects_a_process_with_key_file_paths_only(server, keys, monkeypatch, aiflow_home):
    monkeypatch.setenv("AIFLOW_SERVER_URL", server.url)
    monkeypatch.setenv("AIFLOW_SERVER_KEY", str(keys / "server.key"))
    monkeypatch.setenv("AIFLOW_CLIENT_KEY", str(keys / "alice.key_secret"))
    assert af.connected() and isinstance(default_store(), RemoteStore)
    assert af.register_model("from-env").name == "from-env"
    assert not (aiflow_home / "meta.db").exists()
    af.disconnect()  # overrides the environment
    assert not af.connected()
    from aiflow_notebook.events import connection

    connection.reset()
    os.chmod(keys / "alice.key_secret", 0o644)
    with pytest.raises(CurveKeyError, match="may be read by other users .*chmod 600"):
        default_store()
    os.chmod(keys / "alice.key_secret", 0o600)
    monkeypatch.setenv("AIFLOW_CLIENT_KEY", "x" * 40)
    with pytest.raises(CurveKeyError, match="path of a key file, not a key"):
        af.connected()


def test_the_connect_and_disconnect_magics_switch_the_whole_kernel(server, keys, tmp_path, aiflow_home):
    from sdk_support import close_shell, new_shell, run

    shell = new_shell(str(tmp_path / "ipython"))
    try:
        result = run(shell, f"%aiflow connect {server.url} --key {keys / 'server.key'} "
                            f"--client-key {keys / 'alice.key_secret'}")
        assert result.success and "models, datasets, lineage, events and runs go to" in result.stdout, result
        assert run(shell, "import aiflow_notebook as af\naf.register_model('from-magic')").success
        assert af.connected() and not (aiflow_home / "meta.db").exists()
        result = run(shell, "%aiflow disconnect")
        assert "disconnected" in result.stdout and not af.connected()
        assert af.register_model("local-now").name == "local-now" and (aiflow_home / "meta.db").exists()
        result = run(shell, f"%aiflow connect {server.url} --key {keys / 'server.key'} "
                            f"--client-key {tmp_path / 'unlisted' / 'mallory.key_secret'}")
        assert not af.connected() and "Traceback" not in result.stdout + result.stderr
    finally:
        close_shell()
