"""CURVE: a listed client key (with the server's public key) may send and read; nothing less may.

The server stores the authenticated client's name as the sender of its events, whatever it claims.
"""

from __future__ import annotations

import os
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
from aiflow_notebook.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("curve")
    assert main(["server", "keys", str(directory)]) == 0
    assert main(["server", "keys", str(directory), "--client", "alice"]) == 0
    return directory


def listed(keys, name: str) -> CurveAuth:
    return CurveAuth(CurveAuth.coerce(keys / "server.key").server_public_key, keys / f"{name}.key_secret")


def alice(keys) -> CurveAuth:
    return listed(keys, "alice")


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
    assert stat.S_IMODE((keys / "alice.key_secret").stat().st_mode) == 0o600
    assert (keys / "clients" / "alice.key").read_text().count("public-key") == 1
    assert "secret-key" not in (keys / "clients" / "alice.key").read_text()
    with pytest.raises(CurveKeyError, match="already holds server keys"):
        create_server_keys(keys)


def test_a_listed_client_sends_lists_and_listens(secure_server, keys):
    with EventClient(secure_server.url, auth=alice(keys), deadline=20) as client:
        got = []
        listener = client.listen("secure.k", callback=got.append)
        stored = client.send_event(Event("secure.k", "hello"))
        assert client.list_events("secure.k")[-1].version == stored.version
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            time.sleep(0.02)
        assert [e.value for e in got] == ["hello"]
        listener.stop()


@pytest.mark.parametrize("auth", ["none", "wrong-server-key", "unlisted-client"])
def test_without_a_listed_key_a_client_can_neither_send_nor_read(secure_server, keys, tmp_path, auth):
    """The server's public key is public: knowing it (with a fresh key pair of one's own) is not enough."""
    if auth == "wrong-server-key":
        create_server_keys(tmp_path / "other")
        credentials = tmp_path / "other" / "server.key"
    elif auth == "unlisted-client":
        from aiflow_notebook.events import create_client_keys

        _, secret = create_client_keys(tmp_path / "mallory", "mallory")
        credentials = CurveAuth(CurveAuth.coerce(keys / "server.key").server_public_key, secret)
    else:
        credentials = None
    with EventClient(secure_server.url, auth=alice(keys), deadline=20) as good:
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
    with EventClient(secure_server.url, auth=alice(keys), deadline=20) as good:
        assert {e.value for e in good.list_events("secret")} == {"s1"}  # nothing forged got in


def test_a_curve_server_without_listed_clients_refuses_to_start_and_says_how(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert main(["server", "keys", str(keys)]) == 0
    capsys.readouterr()
    assert main(["server", "start", "--db", f"sqlite:///{tmp_path / 'e.db'}", "--bind", "tcp://127.0.0.1:0",
                 "--curve", str(keys)]) == 1
    assert f"aiflow server keys {keys} --client NAME" in capsys.readouterr().err


def test_the_stored_sender_is_the_authenticated_client_whatever_it_claims(secure_server, keys):
    with EventClient(secure_server.url, auth=alice(keys), deadline=20) as client:
        stored = client.send_event(Event("claims", "v", sender="scheduler"))
        assert [e.sender for e in client.list_events("claims") if e.version == stored.version] == ["alice"]
        heard = []
        listener = client.listen("claims", since_version=stored.version - 1, callback=heard.append)
        wait_for(lambda: heard, 10, "the listener to deliver the event")
        listener.stop()
        assert heard[0].sender == "alice"


def test_one_client_cannot_pre_empt_anothers_idempotent_sends(tmp_path):
    """Bob reusing Alice's client id (and her next sequence numbers) must not swallow Alice's events."""
    keys = tmp_path / "keys"
    for args in ([], ["--client", "alice"], ["--client", "bob"]):
        assert main(["server", "keys", str(keys), *args]) == 0
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys)) as server:
        with EventClient(server.url, auth=listed(keys, "bob"), client_id="alice-laptop",
                         deadline=20) as bob:
            bob.send_events([Event("k", f"bob {i}") for i in range(3)])
        with EventClient(server.url, auth=alice(keys), client_id="alice-laptop", deadline=20) as client:
            stored = client.send_event(Event("k", "alice 1"))
            assert stored.version == 4
            assert [(e.value, e.sender) for e in client.list_events("k")][-1] == ("alice 1", "alice")


def test_clients_listed_or_removed_while_the_server_runs_count_from_their_next_connection(tmp_path):
    keys = tmp_path / "keys"
    assert main(["server", "keys", str(keys)]) == 0
    assert main(["server", "keys", str(keys), "--client", "alice"]) == 0
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0", curve_dir=str(keys)) as server:
        bob_auth = listed(keys, "bob")
        assert main(["server", "keys", str(keys), "--client", "bob"]) == 0  # no restart
        with EventClient(server.url, auth=bob_auth, deadline=20) as bob:
            assert bob.send_event(Event("k", "from bob")).version == 1
        os.unlink(keys / "clients" / "bob.key")
        with EventClient(server.url, auth=bob_auth, deadline=1.5) as bob:
            with pytest.raises(EventServerUnavailableError):
                bob.send_event(Event("k", "bob, removed"))
        with EventClient(server.url, auth=alice(keys), deadline=20) as client:
            assert [e.value for e in client.list_events("k")] == ["from bob"]


def test_the_client_key_can_come_from_the_environment(secure_server, keys, monkeypatch):
    monkeypatch.setenv("AIFLOW_EVENT_CLIENT_KEY", str(keys / "alice.key_secret"))
    with EventClient(secure_server.url, auth=keys / "server.key", deadline=20) as client:
        assert client.list_events("env", limit=1) == []
        client.send_event(Event("env", "v"))
        assert [e.sender for e in client.list_events("env")] == ["alice"]


def test_exposed_address_requires_curve(tmp_path):
    with pytest.raises(EventServerError, match="refusing to serve events on tcp://0.0.0.0.* --curve"):
        EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://0.0.0.0:0")
    with pytest.raises(CurveKeyError, match="aiflow server keys"):
        EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0", curve_dir=str(tmp_path / "nokeys"))
    with pytest.raises(CurveKeyError, match="cannot read the CURVE key file"):
        EventClient("tcp://127.0.0.1:1", auth=tmp_path / "missing.key")
