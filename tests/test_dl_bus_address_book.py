"""BusAddressBook: the AM's address through a real CURVE event bus, with the job's keys carried in the object
itself (it travels pickled to the TaskManagers, where the key files do not exist)."""

from __future__ import annotations

import pickle
import threading

import pytest

from aiflow_notebook.cli import main
from aiflow_notebook.events import EventServer
from dl_on_flink.errors import RendezvousError
from dl_on_flink.framework.address_book import BusAddressBook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bus(tmp_path_factory):
    keys = tmp_path_factory.mktemp("curve")
    assert main(["server", "keys", str(keys)]) == 0
    assert main(["server", "keys", str(keys), "--client", "job"]) == 0
    server = EventServer(f"sqlite:///{tmp_path_factory.mktemp('bus') / 'events.db'}", "tcp://127.0.0.1:0",
                         curve_dir=keys).start()
    try:
        yield server, keys
    finally:
        server.stop()


@pytest.fixture
def book(bus, monkeypatch, tmp_path):
    """Built as a job builds it (from its environment), then shipped: pickled, the key files removed."""
    server, keys = bus
    job_keys = tmp_path / "job-keys"
    job_keys.mkdir()
    for name in ("server.key", "job.key_secret"):
        (job_keys / name).write_bytes((keys / name).read_bytes())
    monkeypatch.setenv("AIFLOW_EVENT_URL", server.url)
    monkeypatch.setenv("AIFLOW_EVENT_SERVER_KEY", str(job_keys / "server.key"))
    monkeypatch.setenv("AIFLOW_EVENT_CLIENT_KEY", str(job_keys / "job.key_secret"))
    shipped = pickle.dumps(BusAddressBook.from_environment())
    for path in job_keys.iterdir():
        path.unlink()
    monkeypatch.delenv("AIFLOW_EVENT_CLIENT_KEY")
    return lambda: pickle.loads(shipped)


def test_nodes_find_the_newest_attempt_published_elsewhere(book):
    am, node = book(), book()
    found = []
    waiter = threading.Thread(target=lambda: found.append(node.wait_for("job-a", None, timeout=20)))
    waiter.start()
    am.publish("job-a", 0, "tcp://127.0.0.1:4000")
    waiter.join(30)
    assert found == [(0, "tcp://127.0.0.1:4000")]
    am.publish("job-a", 1, "tcp://127.0.0.1:4001")  # the AM restarted (a Flink failover)
    assert node.wait_for("job-a", None, timeout=5) == (1, "tcp://127.0.0.1:4001")
    assert node.wait_for("job-a", 0, timeout=5) == (0, "tcp://127.0.0.1:4000")


def test_a_removed_or_missing_address_times_out_naming_the_job_and_the_bus(book, bus):
    am = book()
    am.publish("job-c", 0, "tcp://127.0.0.1:4002")
    am.remove("job-c")
    with pytest.raises(RendezvousError, match=r"job 'job-c' \(any attempt\) on the event bus tcp://127\.0\.0\.1:\d+"):
        book().wait_for("job-c", None, timeout=0.5)
    with pytest.raises(RendezvousError, match="job-never"):
        book().wait_for("job-never", 3, timeout=0.3)


def test_an_unlisted_key_is_refused_by_the_bus(bus, tmp_path):
    from aiflow_notebook.events.auth import CurveAuth, create_client_keys

    server, keys = bus
    _public, secret = create_client_keys(tmp_path, "stranger")
    import zmq.auth

    stranger = BusAddressBook(server.url, CurveAuth(CurveAuth.coerce(keys / "server.key").server_public_key,
                                                    client_keypair=zmq.auth.load_certificate(secret)))
    stranger._events().deadline = 1.0
    with pytest.raises(Exception, match="(?i)no answer|unavailable"):
        stranger.publish("job-d", 0, "tcp://127.0.0.1:4003")
