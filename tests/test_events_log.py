"""The durable event log on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiflow_notebook.events import EventFilter, EventServerError
from aiflow_notebook.events.dedupe import SendRegistry
from aiflow_notebook.events.log import EventLog


def _rows(first: int, count: int, client: str = "c1", key=lambda v: f"k{v % 3}", time=lambda v: 1000 + v):
    return [(v, key(v), f"value {v}", "T" if v % 2 else "U", "ns" if v % 5 == 0 else "default", None, None,
             time(v), client, v) for v in range(first, first + count)]


@pytest.fixture
def event_log(meta_url):
    log = EventLog(meta_url)
    yield log
    log.close()


def test_append_and_filters(event_log):
    assert event_log.last_version() == 0
    event_log.append(_rows(1, 30))
    assert event_log.last_version() == 30
    page = event_log.query(EventFilter.build(), 100)
    rows = page.rows()
    assert [r[0] for r in rows] == list(range(1, 31)) and not page.more
    assert (page.count, page.last_version) == (30, 30)
    assert rows[0] == [1, 1001, "k1", "value 1", "T", "default", None, None]
    versions = lambda **kw: [r[0] for r in event_log.query(EventFilter.build(**kw), 100).rows()]  # noqa: E731
    assert versions(key="k0") == [v for v in range(1, 31) if v % 3 == 0]
    assert versions(key=["k0", "k1"], since_version=20) == [v for v in range(21, 31) if v % 3 != 2]
    assert versions(namespace="ns") == [5, 10, 15, 20, 25, 30]
    assert versions(event_type="U", until_version=6) == [2, 4, 6]
    assert versions(since_time=1010, until_time=1013) == [10, 11, 12]
    assert versions(sender="nobody") == []
    page = event_log.query(EventFilter.build(), 10)
    assert [r[0] for r in page.rows()] == list(range(1, 11)) and page.more
    assert event_log.latest_version(EventFilter.build(key="k1")) == 28
    assert event_log.latest_version(EventFilter.build(key="k1", namespace="ns")) == 25
    assert event_log.latest_version(EventFilter.build(key="nope")) == 0


def test_query_pages_are_bounded_in_bytes(event_log):
    event_log.append([(v, "big", "x" * 100_000, "T", "default", None, None, 1, "c", v) for v in range(1, 21)])
    page = event_log.query(EventFilter.build(), 1000, max_bytes=500_000)
    assert page.count == 5 and page.more and page.last_version == 5 and len(page.json) < 600_000
    assert event_log.query(EventFilter.build(), 1000, max_bytes=10).count == 1  # always at least one


def test_unicode_and_escapes_survive_the_databases_json(event_log):
    tricky = 'quote " backslash \\ newline \n tab \t unicode ✓ 𝄞 control \x01'
    event_log.append([(1, "k ✓", tricky, "T", "default", "s", '{"a": [1]}', 1, "c", 1)])
    assert event_log.query(EventFilter.build(), 10).rows() == [[1, 1, "k ✓", tricky, "T", "default", "s", '{"a": [1]}']]


def test_a_batch_is_all_or_nothing(event_log):
    event_log.append(_rows(1, 3))
    with pytest.raises(event_log.IntegrityError):
        event_log.append(_rows(4, 2) + _rows(1, 1))  # version 1 again
    assert event_log.last_version() == 3
    event_log.append(_rows(4, 2))
    assert event_log.last_version() == 5


def test_same_client_and_sequence_number_is_stored_once(event_log):
    event_log.append(_rows(1, 2, client="a"))
    with pytest.raises(event_log.IntegrityError):
        event_log.append([(3, "k", "v", "T", "default", None, None, 1, "a", 2)])
    event_log.append([(3, "k", "v", "T", "default", None, None, 1, "b", 2)])  # another client: fine


def test_send_registry_survives_a_restart_and_checks_old_sends(meta_url):
    log = EventLog(meta_url)
    log.append(_rows(1, 50, client="a"))
    registry = SendRegistry(log, window=10)  # a fresh registry, as after a server restart
    assert registry.last_seq("a") == 50 and registry.last_seq("new") == 0
    assert registry.lookup("a", 45) == (45, 1045)  # in the window: loaded from the log
    assert registry.lookup("a", 3) == (3, 1003)  # below the window: asked of the log
    assert registry.lookup("a", 51) is None
    registry.record("a", 51, 60, 2000)
    assert registry.lookup("a", 51) == (60, 2000) and registry.last_seq("a") == 51
    log.close()


def test_only_one_server_may_write_a_log(meta_url):
    first, second = EventLog(meta_url), EventLog(meta_url)
    try:
        first.claim_writer()
        with pytest.raises(EventServerError, match="another event server .*already serves"):
            second.claim_writer(wait=0.5)
    finally:
        first.close()
        second.close()
    third = EventLog(meta_url)  # released on close
    third.claim_writer()
    third.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and s != "*"),
       st.text(max_size=200).filter(lambda s: "\x00" not in s),
       st.one_of(st.none(), st.text(max_size=50).filter(lambda s: "\x00" not in s)))
def test_any_storable_text_comes_back_unchanged_from_sqlite(tmp_path, key, value, context):
    """SQLite writes the rows' JSON: whatever the client may send must read back exactly."""
    try:
        (key + value + (context or "")).encode()
    except UnicodeEncodeError:
        return  # unpaired surrogates are refused before they reach the log
    log = EventLog(f"sqlite:///{tmp_path / 'fuzz.db'}")
    try:
        version = log.last_version() + 1
        log.append([(version, key, value, "T", "default", None, context, 7, "c", version)])
        page = log.query(EventFilter.build(since_version=version - 1), 1)
        assert page.rows() == [[version, 7, key, value, "T", "default", None, context]]
    finally:
        log.close()
