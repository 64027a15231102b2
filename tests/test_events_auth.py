"""CURVE: with the server's public key a client may send and read; without it, neither."""

from __future__ import annotations

import stat
import time

import pytest

from aiflow_notebook.cli import main
from aiflow_notebook.events import (
    CurveAuth,
    CurveKeyError,
    Event,
    EventClient,
    EventServer,
    EventServerError,
    EventServerUnavailableError,
    create_server_keys,
)
from aiflow_notebook.testing.event_server import EventServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("curve")
    assert main(["server", "keys", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def secure_server(keys, tmp_path_factory):
    db = tmp_path_factory.mktemp("secure") / "events.db"
    with EventServerProcess(f"sqlite:///{db}", extra_args=["--curve", str(keys)]) as proc:
        yield proc


def test_keys_are_files_and_the_secret_is_private(keys, capsys):
    assert (keys / "server.key").read_text().count("public-key") == 1
    secret = keys / "server.key_secret"
    assert "secret-key" in secret.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(CurveKeyError, match="already holds server keys"):
        create_server_keys(keys)


def test_the_right_key_sends_lists_and_listens(secure_server, keys):
    with EventClient(secure_server.url, auth=keys / "server.key", deadline=20) as client:
        got = []
        listener = client.listen("secure.k", callback=got.append)
        stored = client.send_event(Event("secure.k", "hello"))
        assert client.list_events("secure.k")[-1].version == stored.version
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            time.sleep(0.02)
        assert [e.value for e in got] == ["hello"]
        listener.stop()


@pytest.mark.parametrize("auth", ["none", "wrong-key"])
def test_without_the_right_key_a_client_can_neither_send_nor_read(secure_server, keys, tmp_path, auth):
    if auth == "wrong-key":
        create_server_keys(tmp_path / "other")
        credentials = tmp_path / "other" / "server.key"
    else:
        credentials = None
    with EventClient(secure_server.url, auth=keys, deadline=20) as good:
        good.send_event(Event("secret", "s1"))
    with EventClient(secure_server.url, auth=credentials, deadline=1.5) as intruder:
        with pytest.raises(EventServerUnavailableError, match="no answer"):
            intruder.send_event(Event("secret", "forged"))
        with pytest.raises(EventServerUnavailableError):
            intruder.list_events("secret")
        heard = []
        listener = intruder.listen("secret", callback=heard.append)
        assert not listener.wait_ready(2)
        listener.stop()
        assert heard == []
    with EventClient(secure_server.url, auth=keys, deadline=20) as good:
        assert {e.value for e in good.list_events("secret")} == {"s1"}  # nothing forged got in


def test_a_list_of_allowed_clients_shuts_out_anonymous_clients(tmp_path):
    keys = tmp_path / "keys"
    assert main(["server", "keys", str(keys)]) == 0
    assert main(["server", "keys", str(keys), "--client", "alice"]) == 0
    assert (keys / "clients" / "alice.key").exists()
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys)) as server:
        alice = CurveAuth.coerce(keys)
        alice = CurveAuth(alice.server_public_key, client_certificate=keys / "alice.key_secret")
        with EventClient(server.url, auth=alice, deadline=20) as client:
            assert client.send_event(Event("k", "from alice")).version == 1
        with EventClient(server.url, auth=keys, deadline=1.5) as anonymous:
            with pytest.raises(EventServerUnavailableError):
                anonymous.send_event(Event("k", "anonymous"))


def test_exposed_address_requires_curve(tmp_path):
    with pytest.raises(EventServerError, match="refusing to serve events on tcp://0.0.0.0.* --curve"):
        EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://0.0.0.0:0")
    with pytest.raises(CurveKeyError, match="aiflow server keys"):
        EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0", curve_dir=str(tmp_path / "nokeys"))
    with pytest.raises(CurveKeyError, match="cannot read the CURVE key file"):
        EventClient("tcp://127.0.0.1:1", auth=tmp_path / "missing.key")
