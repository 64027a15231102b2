"""Cancelling a Flink job that holds a dl_on_flink cluster stops it at once (issue 13, bug 2).

In the local mini-cluster the roles run as threads of the client (PyFlink's loopback mode): the client
lives on after a cancel, so before the fix the AM went on failing over (attempts 3 … 11) and the node
children lived until the client exited. Real PyFlink jobs, real child processes.
"""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from aiflow_notebook.testing.processes import our_processes, wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for
from dl_on_flink.pytorch import PyTorchClusterConfig, train
from dl_on_flink.testing import CHILD_MODULE, live_supervisors, local_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("no_dl_child_left_behind")]


def worker_1_keeps_failing(ctx):
    with open(ctx.get_property("log"), "a") as fh:
        fh.write(f"{ctx.get_index()} {ctx.get_current_attempt_index()}\n")
    if ctx.get_index() == 1:
        time.sleep(0.5)
        raise RuntimeError(f"worker 1 fails on attempt {ctx.get_current_attempt_index()}")
    time.sleep(600)


def attempts(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_cancel_stops_failover_and_kills_every_node_child_within_seconds(tmp_path):
    log = tmp_path / "attempts.log"
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(worker_1_keeps_failing)
              .set_max_failover(50).set_property("log", log).set_property("heartbeat_interval", 0.1).build())
    env = local_env()
    train(env, config)
    client = env.execute_async("cancel a failing cluster")
    try:
        wait_for(lambda: "1 1" in attempts(log), timeout=180, what="the cluster's first failover")
        wait_for(lambda: our_processes(cmdline=CHILD_MODULE), timeout=60, what="a node child of the next attempt")
    finally:
        client.cancel().result()
    cancelled = time.monotonic()
    assert wait_no_process_left(cmdline=CHILD_MODULE, timeout=10) == []
    gone_after = time.monotonic() - cancelled
    seen = attempts(log)
    # Only a node's supervisor starts its children, and it kills them before it ends: a failover that went
    # on would have started a new attempt before they all ended, or kept them alive.
    wait_for(lambda: not live_supervisors(), timeout=60, what="every node supervisor to end after the cancel")
    assert attempts(log) == seen, "the cluster started new attempts after the cancel"
    assert our_processes(cmdline=CHILD_MODULE) == []
    assert gone_after <= 5, f"node children outlived the cancel by {gone_after:.1f} s"


# --- the same, without Flink: the AM and node runners in this process, real child processes ---


def waits(ctx):
    time.sleep(600)


def test_the_first_role_that_notices_the_cancel_stops_the_whole_cluster(tmp_path):
    """Flink tears the tasks of a cancelled job down one after the other (up to 30 s apart): a node
    whose own task is still up hears of the cancel from the AM, at its next heartbeat."""
    import threading

    from dl_on_flink.errors import ClusterCancelledError
    from dl_on_flink.framework.address_book import FileAddressBook
    from dl_on_flink.framework.am import ApplicationMaster
    from dl_on_flink.framework.cluster import ClusterConfig
    from dl_on_flink.framework.node import NodePlan, NodeRunner

    events = []
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(waits)
              .set_status_publisher(events.append).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    cancelled = threading.Event()
    am = ApplicationMaster("job", config, book, has_input=False)
    runners = [NodeRunner(NodePlan("job", config, "worker", book), 0, cancelled=cancelled.is_set).start(),
               NodeRunner(NodePlan("job", config, "worker", book), 1).start()]  # its task is "still up"
    try:
        def cancel_once_running():
            wait_for(lambda: any(e.key == "job" and e.value == "RUNNING" for e in list(events)), timeout=120,
                     what="the cluster to run")
            wait_for(lambda: len(our_processes(cmdline=CHILD_MODULE)) == 2, timeout=60, what="both children")
            cancelled.set()

        threading.Thread(target=cancel_once_running, daemon=True).start()
        with pytest.raises(ClusterCancelledError):
            am.run(stop_after=180)
        since = time.monotonic()
        assert wait_no_process_left(cmdline=CHILD_MODULE, timeout=10) == []
        # each runner records its verdict just after killing its child: give it the same 3 s
        assert all(r.wait(max(0.0, 3 - (time.monotonic() - since))) for r in runners)
        assert time.monotonic() - since < 3
        assert [r.outcome for r in runners] == ["cancelled", "cancelled"]
        assert [e.value for e in events if e.key == "job"] == ["INIT", "RUNNING", "CANCELLED"]
    finally:
        for runner in runners:
            runner.close()
