"""NodeRunner: the operator side of one node — its child process, its heartbeat, its data.

One runner lives in each subtask of a role operator, in two halves that share a private directory:

- the :class:`~.supervisor.Supervisor`, a thread of ours: finds the AM, heartbeats it, starts, restarts
  and kills the node's child process as the AM says, and reports the child's exit and progress;
- the :class:`~.feed.Feed`, on the operator thread (PyFlink's): rows from Flink into the child and the
  child's rows back, following the supervisor to each new attempt.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from dl_on_flink.framework.feed import Feed
from dl_on_flink.framework.plan import NodePlan
from dl_on_flink.framework.supervisor import Supervisor

__all__ = ["NodePlan", "NodeRunner"]


class NodeRunner:
    """Runs node ``plan.node_type`` ``index``; see the module docstring for its two halves."""

    def __init__(self, plan: NodePlan, index: int, cancelled: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.index = index
        self.node = (plan.node_type, index)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dlf-{plan.node_type}{index}-"))
        # removed by close(); also when the runner is collected or the process exits without close()
        self._remove_workdir = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        # ``cancelled``: True once Flink cancelled the job (see dl_on_flink.operator.harness)
        self._supervisor = Supervisor(plan, index, self.workdir, cancelled or (lambda: False),
                                      input_blocked=self._input_blocked)
        self._feed = Feed(plan, self.workdir, self._supervisor)

    # --- lifecycle ---
    def start(self) -> NodeRunner:
        self._supervisor.start()
        return self

    @property
    def outcome(self) -> str | None:
        """None while the cluster runs; "stopped" when it finished; "failed" when it gave up; "cancelled"
        when Flink cancelled the job."""
        return self._supervisor.outcome

    def raise_if_failed(self) -> None:
        self._supervisor.raise_if_failed()

    def wait(self, timeout: float) -> bool:
        """Wait until the cluster's verdict is known (True) or ``timeout`` passed (False)."""
        return self._supervisor.wait(timeout)

    def close(self) -> None:
        """Stop heartbeating, kill the child, close the channels, remove the private directory."""
        self._supervisor.stop()  # from now on nothing is launched into the directory
        self._feed.close()
        self._remove_workdir()

    # --- data plane (operator thread) ---
    def write(self, row_bytes: bytes) -> None:
        """One encoded input row (batched into frames; blocks under back-pressure)."""
        self._feed.write(row_bytes)

    def write_frame(self, frame: bytes) -> None:
        """One whole data frame (an Arrow batch, see dl_on_flink.framework.batches)."""
        self._feed.write_frame(frame)

    def flush(self) -> None:
        """Send the partial frame now (called on the operator's timer, so a trickle is not held back)."""
        self._feed.flush()

    def end_input(self) -> None:
        """The bounded input ended: send end-of-epoch, replay further epochs, then end-of-input."""
        self._feed.end_input()

    def take_output(self) -> list[tuple]:
        """Output rows received so far (never waits for more)."""
        return self._feed.take_output()

    def finish(self, poll: float = 0.1) -> Iterator[list[tuple]]:
        """After the input ended (or for a node without input): yield output until the verdict.

        Raises ClusterFailedError when the cluster failed.
        """
        return self._feed.finish(poll)

    def _input_blocked(self) -> float | None:
        return self._feed.blocked_for()
