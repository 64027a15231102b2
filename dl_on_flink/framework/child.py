"""The child process of one node: ``python -m dl_on_flink.framework.child LAUNCH_FILE``.

Steps, in order: watch the parent (die with the operator) → framework ``prepare`` (bind and advertise) →
rendezvous with the AM (wait until every node of this attempt registered) → framework ``setup`` →
the user's entry → end-of-output marker → ``teardown``. Meanwhile a reporter thread writes the node's
progress (phase, rows read and written, ``report_progress`` calls, whether it waits for Flink) to a small
file whenever it changes; the node runner carries it to the AM on its heartbeat, which is how the AM
tells a stuck node from a busy one. Exit codes: 0 the entry returned, 1 it raised
(traceback on stderr, which the node runner quotes), 3 this attempt was superseded before it started.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

import cloudpickle

from dl_on_flink.errors import RendezvousError
from dl_on_flink.framework.am import AMClient
from dl_on_flink.framework.context import Context, NodeLaunch
from dl_on_flink.framework.process import watch_parent

EXIT_OK, EXIT_FAILED, EXIT_SUPERSEDED = 0, 1, 3


def main(argv: list[str]) -> int:
    watch_parent()
    with open(argv[1], "rb") as fh:
        launch: NodeLaunch = cloudpickle.load(fh)
    ctx = Context(launch)
    if launch.progress_path is not None:
        start_progress_reporter(ctx, launch.progress_path)
    am = AMClient(launch.am_address)
    try:
        ctx._phase = "prepare"
        props = launch.hooks.prepare(ctx)
        ctx._phase = "rendezvous"
        cluster = rendezvous(am, launch, props)
        if cluster is None:
            return EXIT_SUPERSEDED
        ctx._cluster = cluster
        ctx._phase = "setup"
        launch.hooks.setup(ctx)
        ctx._phase = "entry"
        launch.entry(ctx)
        ctx._close_io()
        ctx._phase = "teardown"
        launch.hooks.teardown(ctx)
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - everything the entry raises is the node's failure
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            ctx._close_io()
            return EXIT_OK
        print(
            f"dl_on_flink: {launch.node_type} {launch.index} (attempt {launch.attempt}) failed:",
            file=sys.stderr,
        )
        traceback.print_exc()
        return EXIT_FAILED
    finally:
        am.close()
        ctx._close_sockets()


def rendezvous(am: AMClient, launch: NodeLaunch, props: dict[str, str]) -> dict | None:
    """Register with the AM and wait for the full cluster spec (None: this attempt was superseded)."""
    request = {
        "op": "rendezvous",
        "node": [launch.node_type, launch.index],
        "attempt": launch.attempt,
        "host": launch.host,
        "props": props,
    }
    deadline = time.monotonic() + launch.rendezvous_timeout
    delay = 0.02
    while True:
        try:
            reply = am.call(request, timeout=5.0)
        except RendezvousError:
            reply = {"wait": True}
        if "error" in reply:
            raise RendezvousError(f"the application master rejected the rendezvous: {reply['error']}")
        if reply.get("stale"):
            return None
        if "cluster" in reply:
            return reply["cluster"]
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"{launch.node_type} {launch.index} (attempt {launch.attempt}): the cluster did not assemble "
                f"within {launch.rendezvous_timeout:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def start_progress_reporter(ctx: Context, path: str, interval: float = 0.2) -> threading.Thread:
    """Write ``ctx._progress()`` to ``path`` (atomically) whenever it changed, every ``interval`` s."""

    def report() -> None:
        last = None
        while True:
            progress = ctx._progress()
            if progress != last:
                tmp = f"{path}.tmp"
                try:
                    with open(tmp, "w") as fh:
                        json.dump(progress, fh)
                    os.replace(tmp, path)
                    last = progress
                except OSError:
                    pass  # the node directory is gone: the runner is closing
            time.sleep(interval)

    thread = threading.Thread(target=report, name="dl-on-flink-progress", daemon=True)
    thread.start()
    return thread


def _exit(code: int) -> None:
    """Flush, let ZeroMQ deliver what is queued, and exit without waiting for framework threads."""
    sys.stdout.flush()
    sys.stderr.flush()
    import threading

    import zmq

    # term() waits until queued frames (the last rows, the end-of-output marker) are delivered; bounded,
    # because a socket the entry left open would block it forever.
    closer = threading.Thread(target=zmq.Context.instance().term, daemon=True)
    closer.start()
    closer.join(30)
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv))
