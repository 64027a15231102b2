"""Framework pieces without Flink: state machine, address book, channel, and AM + runners in-process."""

from __future__ import annotations

import json
import sys
import threading
import time

import cloudpickle
import pytest

from aiflow_notebook.testing.processes import wait_no_process_left
from dl_on_flink.errors import ClusterFailedError, RendezvousError
from dl_on_flink.framework.address_book import FileAddressBook
from dl_on_flink.framework.am import ApplicationMaster
from dl_on_flink.framework.channel import (
    END_OF_EPOCH,
    END_OF_INPUT,
    FrameBuilder,
    Receiver,
    RowReader,
    Sender,
)
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.codec import RowCodec, Schema
from dl_on_flink.framework.node import NodePlan, NodeRunner
from dl_on_flink.framework.state_machine import (
    AllWorkersStateMachine,
    AMStateMachine,
    ClusterState,
    NodeInfo,
    WorkerZeroStateMachine,
)
from dl_on_flink.testing import CHILD_MODULE

cloudpickle.register_pickle_by_value(sys.modules[__name__])

S = ClusterState


def register_all(sm, attempt):
    for node in sm.nodes:
        sm.register(node, attempt, NodeInfo("127.0.0.1", {"n": str(node[1])}))


def test_state_machine_happy_path():
    seen = []
    sm = AllWorkersStateMachine({"worker": 2}, max_failover=3, on_transition=lambda s, a, r: seen.append((s, a)))
    assert sm.cluster_spec() is None
    register_all(sm, 0)
    assert sm.state is S.RUNNING
    assert sm.cluster_spec() == {"worker": [{"host": "127.0.0.1", "props": {"n": "0"}},
                                            {"host": "127.0.0.1", "props": {"n": "1"}}]}
    sm.node_finished(("worker", 0), 0)
    assert sm.state is S.RUNNING
    sm.node_finished(("worker", 1), 0)
    assert seen == [(S.RUNNING, 0), (S.FINISHED, 0)]


def test_failover_increments_attempt_then_fails_after_max():
    sm = AllWorkersStateMachine({"worker": 2}, max_failover=2)
    for attempt in range(2):
        register_all(sm, attempt)
        sm.node_failed(("worker", 1), attempt, f"boom {attempt}")
        assert (sm.state, sm.attempt) == (S.INIT, attempt + 1)
        assert not sm.registered
    # reports about an old attempt change nothing
    sm.node_failed(("worker", 0), 0, "late news")
    sm.node_finished(("worker", 0), 1)
    assert not sm.register(("worker", 0), 1, NodeInfo("h"))
    register_all(sm, 2)
    sm.node_failed(("worker", 1), 2, "boom 2")
    assert sm.state is S.FAILED and sm.error == "boom 2"
    assert [s for s, _ in sm.history].count(S.FAILOVER) == 2


def test_finish_policies():
    tf = WorkerZeroStateMachine({"worker": 3, "ps": 2}, max_failover=0)
    register_all(tf, 0)
    tf.node_finished(("worker", 0), 0)
    assert tf.state is S.FINISHED
    generic = AMStateMachine({"worker": 1, "ps": 1}, max_failover=0)
    register_all(generic, 0)
    generic.node_finished(("worker", 0), 0)
    assert generic.state is S.RUNNING


def test_file_address_book_across_instances(tmp_path):
    writer, reader = FileAddressBook(tmp_path), FileAddressBook(tmp_path)
    with pytest.raises(RendezvousError, match="job-a"):
        reader.wait_for("job-a", timeout=0.1)
    threading.Timer(0.2, writer.publish, args=("job-a", 0, "tcp://127.0.0.1:1")).start()
    assert reader.wait_for("job-a", timeout=5) == (0, "tcp://127.0.0.1:1")
    writer.publish("job-a", 1, "tcp://127.0.0.1:2")
    assert reader.wait_for("job-a") == (1, "tcp://127.0.0.1:2")
    assert reader.wait_for("job-a", attempt=0) == (0, "tcp://127.0.0.1:1")
    writer.remove("job-a")
    assert not (tmp_path / "job-a").exists()


def test_channel_markers_and_back_pressure(tmp_path):
    endpoint = f"ipc://{tmp_path}/c"
    sender, receiver = Sender(endpoint, bind=True, hwm=2), Receiver(endpoint, bind=False, hwm=2)
    codec = RowCodec(Schema([("x", "BIGINT")]))
    try:
        frames = FrameBuilder(frame_bytes=1)  # one row per frame
        sent = 0
        while sender.send(frames.add(codec.encode((sent,))), timeout=0.3):
            sent += 1
            assert sent < 10_000, "no back-pressure"
        reader = RowReader(receiver, codec, timeout=5)
        got = []
        drain = threading.Thread(target=lambda: got.extend(reader.read_epoch()))
        drain.start()
        for i in range(sent, sent + 50):
            assert sender.send(frames.add(codec.encode((i,))), timeout=5)
        assert sender.send(END_OF_EPOCH, timeout=5)
        drain.join(10)
        assert [r[0] for r in got] == list(range(sent + 50))
        assert reader.epochs_completed == 1 and not reader.end_of_input
        assert sender.send(END_OF_INPUT, timeout=5)
        assert list(reader.read_epoch()) == [] and reader.end_of_input
    finally:
        sender.close()
        receiver.close()


# --- AM and node runners in this process, real child processes, no Flink ---

def flaky_entry(ctx):
    with open(ctx.get_property("log"), "a") as fh:
        fh.write(f"{ctx.get_node_type()} {ctx.get_index()} {ctx.get_current_attempt_index()}\n")
    if ctx.get_index() == 1 and ctx.get_current_attempt_index() < 2:
        deadline = time.monotonic() + 20  # fail only once worker 0 is in this attempt's entry too
        while f"worker 0 {ctx.get_current_attempt_index()}\n" not in open(ctx.get_property("log")).read():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        raise RuntimeError(f"worker 1 fails on attempt {ctx.get_current_attempt_index()}")


def always_fails(ctx):
    if ctx.get_index() == 0:
        raise ValueError("this node always fails")
    time.sleep(60)


def run_cluster(config, tmp_path, nodes):
    book = FileAddressBook(tmp_path / "book")
    am = ApplicationMaster("job", config, book, has_input=False)
    runners = [NodeRunner(NodePlan("job", config, "worker", book), i).start() for i in range(nodes)]
    try:
        am.run(stop_after=120)
        for runner in runners:
            list(runner.finish())
    finally:
        for runner in runners:
            runner.close()


@pytest.mark.slow
def test_failover_restarts_every_node_with_the_attempt_index(tmp_path):
    log = tmp_path / "log"
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(flaky_entry)
              .set_property("log", log).set_property("heartbeat_interval", 0.1).build())
    run_cluster(config, tmp_path, 2)
    lines = sorted(log.read_text().split("\n")[:-1])
    assert lines == [f"worker {i} {a}" for i in (0, 1) for a in (0, 1, 2)]
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


@pytest.mark.slow
def test_always_failing_node_fails_the_cluster_with_its_error(tmp_path):
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(always_fails)
              .set_max_failover(1).set_property("heartbeat_interval", 0.1).build())
    with pytest.raises(ClusterFailedError) as err:
        run_cluster(config, tmp_path, 2)
    message = str(err.value)
    assert "worker 0 (attempt 1) exited with code 1" in message
    assert "ValueError: this node always fails" in message
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


def sleeps(ctx):
    time.sleep(60)


@pytest.mark.slow
def test_lost_heartbeat_fails_the_node_and_status_is_published(tmp_path):
    events = []
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(sleeps).set_max_failover(0)
              .set_status_publisher(events.append).set_property("heartbeat_interval", 0.1)
              .set_property("heartbeat_timeout", 1.5).set_property("stop_grace", 1).build())
    book = FileAddressBook(tmp_path / "book")
    am = ApplicationMaster("job", config, book, has_input=False)
    runners = [NodeRunner(NodePlan("job", config, "worker", book), i).start() for i in range(2)]
    try:
        silenced = False

        def silence_worker_1_once_running():
            nonlocal silenced
            while not any(e.key == "job" and e.value == "RUNNING" for e in list(events)):
                time.sleep(0.05)
            runners[1].close()  # its supervisor stops heartbeating (and kills its child)
            silenced = True

        threading.Thread(target=silence_worker_1_once_running, daemon=True).start()
        with pytest.raises(ClusterFailedError, match="worker 1 .*lost heartbeat"):
            am.run(stop_after=60)
        assert silenced
    finally:
        for runner in runners:
            runner.close()
    cluster_states = [e.value for e in events if e.key == "job"]
    assert cluster_states == ["INIT", "RUNNING", "FAILED"]
    assert {e.key for e in events if e.event_type == "DL_NODE_STATUS"} == {"job.worker.0", "job.worker.1"}
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


def epoch_recorder(ctx):
    import json

    reader = ctx.get_row_reader()
    epochs = []
    while True:
        rows = [row[0] for row in reader.read_epoch()]
        if reader.end_of_input:
            break
        epochs.append(rows)
        if ctx.get_index() == 1 and ctx.get_current_attempt_index() == 0:
            raise RuntimeError("worker 1 fails after its first epoch")
    with open(f"{ctx.get_property('out')}/worker-{ctx.get_index()}-{ctx.get_current_attempt_index()}", "w") as fh:
        json.dump(epochs, fh)


@pytest.mark.slow
def test_a_restarted_attempt_sees_every_epoch_of_the_spilled_input(tmp_path):
    import json

    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(epoch_recorder)
              .set_property("out", tmp_path).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    schema = Schema([("x", "BIGINT")])
    codec = RowCodec(schema)
    am = ApplicationMaster("job", config, book, has_input=True)
    runners = [NodeRunner(NodePlan("job", config, "worker", book, input_schema=schema, max_epoch=3), i).start()
               for i in range(2)]
    errors = []

    def feed(runner, offset):
        try:
            for x in range(offset, offset + 500):
                runner.write(codec.encode((x,)))
            runner.end_input()
            list(runner.finish())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    feeders = [threading.Thread(target=feed, args=(r, 1000 * r.index)) for r in runners]
    try:
        for t in feeders:
            t.start()
        am.run(stop_after=120)
        for t in feeders:
            t.join(30)
    finally:
        for runner in runners:
            runner.close()
    assert not errors
    for i in (0, 1):
        epochs = json.loads((tmp_path / f"worker-{i}-1").read_text())
        assert epochs == [list(range(1000 * i, 1000 * i + 500))] * 3
    assert not (tmp_path / "worker-1-0").exists()
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


def waits_for_go(ctx):
    import os

    deadline = time.monotonic() + 60
    while not os.path.exists(ctx.get_property("go")):
        assert time.monotonic() < deadline, "never told to go"
        time.sleep(0.05)


GARBAGE = {
    "not JSON": [b"not json"],
    "not UTF-8": [b"\xff\xfe\x00"],
    "empty": [b""],
    "not an object": [b"[1, 2]"],
    "no node": [b'{"op": "hb"}'],
    "index not an int": [b'{"op": "hb", "node": ["worker", "0"]}'],
    "index a bool": [b'{"op": "hb", "node": ["worker", true]}'],
    "child not a state": [b'{"op": "hb", "node": ["worker", 0], "child": 5}'],
    "attempt not an int": [b'{"op": "rendezvous", "node": ["worker", 0], "attempt": "x", "host": "h"}'],
    "props not strings": [b'{"op": "rendezvous", "node": ["worker", 0], "attempt": 0, "host": "h", "props": {"a": 1}}'],
    "unknown op": [b'{"op": "nope", "node": ["worker", 0]}'],
    "unknown node": [b'{"op": "hb", "node": ["ps", 7]}'],
    "two frames": [b'{"op": "hb", "node": ["worker", 0]}', b"more"],
    "too large": [b" " * (2 << 20) + b"{}"],
}


def test_every_message_survives_its_wire_form():
    from dl_on_flink.framework import am_protocol as p

    requests = [
        p.Heartbeat(("worker", 1), 2, "running", progress=p.Progress(phase="entry", reports=3, rows_read=10,
                                                                     waiting=True, cpu=1.5, input_blocked=0.0)),
        p.Heartbeat(("ps", 0), cancelled=True),
        p.Rendezvous(("worker", 0), 0, "127.0.0.1", {"tf_port": "4242"}),
        p.Barrier(("worker", 0), 1, "tf-collective-server-update-1"),
        p.FinishedWorkers(("worker", 1), 0),
    ]
    for rid, request in enumerate(requests):
        assert p.parse_request([p.encode_request(request, rid)]) == (request, rid)
    replies = [
        (requests[0], p.Verdict("run", attempt=2)),
        (requests[0], p.Verdict("fail", error="worker 1 exited with code 1")),
        (requests[2], p.RendezvousReply(cluster={"worker": [{"host": "h", "props": {}}]})),
        (requests[2], p.RendezvousReply(wait=True)),
        (requests[3], p.BarrierReply(wait=True, missing=(("worker", 1),))),
        (requests[4], p.FinishedWorkersReply((0, 1))),
        (requests[1], p.Rejected("unknown node ps 0")),
    ]
    for request, reply in replies:
        assert p.parse_reply(request, p.encode_reply(reply, 7)) == (reply, 7)
    assert p.Progress.from_json(p.Progress(phase="setup").to_json()) == p.Progress(phase="setup")


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_malformed_requests_do_not_parse(name):
    from dl_on_flink.framework.am_protocol import BadMessage, parse_request

    if name == "unknown node":  # well-formed: the AM answers it with an error of its own
        assert parse_request(GARBAGE[name])[0].node == ("ps", 7)
        return
    with pytest.raises(BadMessage):
        parse_request(GARBAGE[name])


def test_a_progress_report_with_a_field_nobody_knows_is_refused():
    from dl_on_flink.framework.am_protocol import BadMessage, Progress, parse_request

    with pytest.raises(BadMessage, match="unknown field"):
        Progress.from_json('{"phase": "entry", "colour": "red"}')
    with pytest.raises(BadMessage, match="progress"):
        parse_request([b'{"op": "hb", "node": ["worker", 0], "child": "running", "progress": {"cpu": -1}}'])


@pytest.mark.slow
def test_am_rejects_malformed_requests_and_keeps_serving(tmp_path, caplog):
    import zmq

    go = tmp_path / "go"
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(waits_for_go)
              .set_property("go", go).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    replies, problems = {}, []

    def send_garbage():
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            _, address = book.wait_for("job", timeout=30)
            sock.connect(address)
            for name, frames in GARBAGE.items():
                sock.send_multipart(frames)
                if not sock.poll(5000, zmq.POLLIN):
                    problems.append(f"no reply to {name}")
                    continue
                replies[name] = sock.recv_multipart()
            sock.send(b"x" * (17 << 20))  # over the hard limit: ZeroMQ drops this connection, nothing to answer
            time.sleep(0.5)
        except Exception as exc:  # noqa: BLE001 - reported below
            problems.append(repr(exc))
        finally:
            sock.close()
            go.touch()

    caplog.set_level("WARNING", logger="dl_on_flink.framework.am")
    sender = threading.Thread(target=send_garbage)
    sender.start()
    run_cluster(config, tmp_path, 2)  # the AM survived the garbage and served both nodes to the end
    sender.join(10)
    assert not problems
    for name, frames in replies.items():
        assert len(frames) == 1, name
        assert "error" in json.loads(frames[0]), (name, frames)
    assert set(replies) == set(GARBAGE)
    rejected = [r.getMessage() for r in caplog.records if "rejected a request" in r.getMessage()]
    assert len(rejected) == len(GARBAGE) - 1  # "unknown node" is well-formed: answered, not logged
    assert all(len(line) < 1000 for line in rejected), "log lines quote requests truncated"
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


def busy_then_done(ctx):
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # CPU, but no rows and no reports
        sum(range(10_000))


def sleeps_waits_then_reports(ctx):
    time.sleep(6)  # no CPU, no rows: only the busy node's CPU shows the cluster is not stuck
    rows = list(ctx.get_row_reader())  # waits for Flink (the feeder holds the rows back)
    assert len(rows) == 10
    for i in range(8):  # nothing but reports
        ctx.report_progress(f"step {i}")
        time.sleep(0.5)


@pytest.mark.slow
def test_cpu_waiting_for_flink_and_reports_count_as_progress(tmp_path):
    config = (ClusterConfig.new_builder().add_node_type("busy", 1).add_node_type("worker", 1)
              .set_node_entry(lambda ctx: (busy_then_done if ctx.get_node_type() == "busy"
                                           else sleeps_waits_then_reports)(ctx))
              .set_max_failover(0).set_property("progress_timeout", 2.5)
              .set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    schema = Schema([("x", "BIGINT")])
    codec = RowCodec(schema)
    am = ApplicationMaster("job", config, book, has_input=True)
    busy = NodeRunner(NodePlan("job", config, "busy", book), 0).start()
    worker = NodeRunner(NodePlan("job", config, "worker", book, input_schema=schema), 0).start()
    errors = []

    def feed():
        try:
            time.sleep(13)  # the worker waits for these rows for ≈ 6 s, longer than progress_timeout
            for x in range(10):
                worker.write(codec.encode((x,)))
            worker.end_input()
            list(worker.finish())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    feeder = threading.Thread(target=feed)
    try:
        feeder.start()
        am.run(stop_after=90)  # raises ClusterFailedError if any node was taken for stuck
        feeder.join(30)
        list(busy.finish())
    finally:
        busy.close()
        worker.close()
    assert not errors
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []


def spins_or_ignores_its_input(ctx):
    if ctx.get_node_type() == "busy":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # keeps the cluster busy: only the node Flink waits for is stuck
            sum(range(10_000))
    else:
        threading.Event().wait(60)  # never reads its input


@pytest.mark.slow
def test_a_node_that_takes_no_input_is_stuck_even_while_others_work(tmp_path):
    config = (ClusterConfig.new_builder().add_node_type("busy", 1).add_node_type("worker", 1)
              .set_node_entry(spins_or_ignores_its_input).set_max_failover(0)
              .set_property("progress_timeout", 3).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    schema = Schema([("blob", "BYTES")])
    codec = RowCodec(schema)
    am = ApplicationMaster("job", config, book, has_input=True)
    busy = NodeRunner(NodePlan("job", config, "busy", book), 0).start()
    worker = NodeRunner(NodePlan("job", config, "worker", book, input_schema=schema), 0).start()

    def feed():
        try:
            for _ in range(400):  # 25 MB: far more than the channel and the socket buffers hold
                worker.write(codec.encode((b"x" * 65536,)))
        except ClusterFailedError:
            pass  # the verdict reached the blocked sender

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    try:
        feeder.start()
        with pytest.raises(ClusterFailedError) as err:
            am.run(stop_after=60)
        feeder.join(30)
    finally:
        busy.close()
        worker.close()
    message = str(err.value)
    assert "worker 0 (attempt 0) is stuck" in message and "its input could not be delivered for" in message
    assert "busy 0" not in message
    assert time.monotonic() - started < 30
    assert wait_no_process_left(cmdline=CHILD_MODULE) == []
