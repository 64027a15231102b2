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

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import cloudpickle

from aiflow_notebook.core.files import write_atomic
from dl_on_flink.errors import RendezvousError
from dl_on_flink.framework.am_protocol import AMClient, Rejected, Rendezvous
from dl_on_flink.framework.context import Context, Entry, NodeSpec
from dl_on_flink.framework.hooks import NodeHooks
from dl_on_flink.framework.process import watch_parent

MODULE = "dl_on_flink.framework.child"  # started as ``python -m MODULE LAUNCH_FILE``
EXIT_OK, EXIT_FAILED, EXIT_SUPERSEDED = 0, 1, 3


@dataclass(frozen=True)
class NodeLaunch:
    """The launch file: everything the child of one attempt needs, written by its node runner."""

    spec: NodeSpec
    entry: Entry
    hooks: NodeHooks
    progress_path: str | None = None  # where the child's progress reporter writes (read by the node runner)

    def write(self, path: Path) -> None:
        with open(path, "wb") as fh:
            cloudpickle.dump(self, fh)

    @staticmethod
    def read(path: str | os.PathLike) -> NodeLaunch:
        with open(path, "rb") as fh:
            return cloudpickle.load(fh)


def main(argv: list[str]) -> int:
    watch_parent()
    launch = NodeLaunch.read(argv[1])
    ctx = Context(launch.spec)
    if launch.progress_path is not None:
        start_progress_reporter(ctx, launch.progress_path)
    am = AMClient(launch.spec.am_address)
    try:
        return run_node(ctx, launch, am)
    except BaseException as exc:  # noqa: BLE001 - everything the entry raises is the node's failure
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            ctx._close_io()
            return EXIT_OK
        print(f"dl_on_flink: {launch.spec.name} failed:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILED
    finally:
        am.close()
        ctx._close_sockets()


def run_node(ctx: Context, launch: NodeLaunch, am: AMClient) -> int:
    """The steps of the module docstring, each under its phase (what the AM quotes for a stuck node)."""
    ctx._phase = "prepare"
    props = launch.hooks.prepare(ctx)
    ctx._phase = "rendezvous"
    cluster = rendezvous(am, launch.spec, props)
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


def rendezvous(am: AMClient, spec: NodeSpec, props: dict[str, str]) -> dict | None:
    """Register with the AM and wait for the full cluster spec (None: this attempt was superseded)."""
    request = Rendezvous((spec.node_type, spec.index), spec.attempt, spec.host, props)
    for reply in am.keep_asking(request, spec.rendezvous_timeout):
        if isinstance(reply, Rejected):
            raise RendezvousError(f"the application master rejected the rendezvous: {reply.error}")
        if reply is not None and reply.stale:
            return None
        if reply is not None and reply.cluster is not None:
            return reply.cluster
    raise RendezvousError(f"{spec.name}: the cluster did not assemble within {spec.rendezvous_timeout:.0f} s")


def start_progress_reporter(ctx: Context, path: str, interval: float = 0.2) -> threading.Thread:
    """Write ``ctx._progress()`` to ``path`` (atomically) whenever it changed, every ``interval`` s."""

    def report() -> None:
        last = None
        while True:
            progress = ctx._progress()
            if progress != last:
                try:
                    write_atomic(path, progress.to_json(), sync=False)  # rewritten often, read at once
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
    import zmq

    # term() waits until queued frames (the last rows, the end-of-output marker) are delivered; bounded,
    # because a socket the entry left open would block it forever.
    closer = threading.Thread(target=zmq.Context.instance().term, daemon=True)
    closer.start()
    closer.join(30)
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv))
