"""The feed of one node: rows from Flink into its child process, and the rows the child writes back.

It lives on the operator thread (PyFlink's): rows in (``write`` / ``flush`` / ``end_input``), rows out
(``take_output`` / ``finish``), following the :class:`~.supervisor.Supervisor` to each new attempt.
Every attempt has its own channel endpoints, so nothing meant for a killed child reaches its successor.
While the child does not take a frame, the feed drains its output (no deadlock on full queues) and
notes since when it has been blocked: the supervisor reports that to the AM (a node Flink waits for).

Input replay: with ``max_epoch > 1`` (or the property ``replay_input_on_failover``) every input frame is
also appended to a spill file in the node's private directory. Later epochs are read back from it, and a
restarted attempt is first sent everything spilled so far, so every attempt sees the whole input, each
row once per epoch. Without it, rows in flight when a node fails are lost (as in dl-on-flink).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

from aiflow_notebook.core.waiting import Deadline
from dl_on_flink.framework.channel import (
    DATA,
    END_OF_EPOCH,
    END_OF_INPUT,
    END_OF_OUTPUT,
    FrameBuilder,
    Receiver,
    Sender,
    endpoint,
    iter_rows,
)
from dl_on_flink.framework.codec import RowCodec
from dl_on_flink.framework.plan import NodePlan
from dl_on_flink.framework.supervisor import Supervisor


class Feed:
    """Moves one node's rows between Flink and the child the supervisor runs (see the module docstring)."""

    def __init__(self, plan: NodePlan, workdir: Path, supervisor: Supervisor) -> None:
        self.plan, self.workdir = plan, workdir
        self._supervisor = supervisor
        self._data_attempt: int | None = None  # the attempt the endpoints below belong to
        self._sender: Sender | None = None
        self._receiver: Receiver | None = None
        self._frames = FrameBuilder()
        self._blocked_since: float | None = None  # when a frame for the child first could not be sent
        self._input_ended = False
        self._output_ended = False
        self._pending_out: list[tuple] = []
        self._out_codec = RowCodec(plan.output_schema, arrays_as="list") if plan.output_schema else None
        replay = plan.max_epoch > 1 or plan.config.bool_property("replay_input_on_failover")
        self._spill = _SpillFile(workdir / "input.spill") if plan.input_schema and replay else None

    def blocked_for(self) -> float | None:
        """For how many seconds the child has refused input (None: it has not)."""
        since = self._blocked_since
        return None if since is None else time.monotonic() - since

    # --- rows in ---
    def write(self, row_bytes: bytes) -> None:
        """One encoded input row (batched into frames; blocks under back-pressure)."""
        frame = self._frames.add(row_bytes)
        if frame is not None:
            self._send_live(frame)

    def write_frame(self, frame: bytes) -> None:
        """One whole data frame (an Arrow batch from the batched feed), after any rows written before it."""
        self.flush()
        self._send_live(frame)

    def flush(self) -> None:
        """Send the partial frame now (called on the operator's timer, so a trickle is not held back)."""
        frame = self._frames.take()
        if frame is not None:
            self._send_live(frame)

    def end_input(self) -> None:
        """The bounded input ended: send end-of-epoch, replay further epochs, then end-of-input."""
        self.flush()
        self._input_ended = True
        self._ensure_current()
        if self._supervisor.outcome is None and not self._send_tail():
            self._ensure_current()  # the new attempt's replay already includes the tail

    # --- rows out ---
    def take_output(self) -> list[tuple]:
        """Output rows received so far (never waits for more)."""
        if self._supervisor.outcome is None:
            self._ensure_current()
        self._drain_output()
        rows, self._pending_out = self._pending_out, []
        return rows

    def finish(self, poll: float = 0.1) -> Iterator[list[tuple]]:
        """After the input ended (or for a node without input): yield output until the verdict.

        Raises ClusterFailedError when the cluster failed.
        """
        supervisor = self._supervisor
        while supervisor.outcome is None:
            self._ensure_current()
            if self._receiver is not None:
                self._receiver.socket.poll(int(poll * 1000), zmq.POLLIN)
            else:
                supervisor.wait_for_change(poll)
            rows = self.take_output()
            if rows:
                yield rows
        supervisor.raise_if_failed()
        if supervisor.outcome != "cancelled":  # nobody reads the output of a cancelled job
            yield from self._last_output()

    def close(self) -> None:
        self._close_channels()
        if self._spill is not None:
            self._spill.close()

    def _last_output(self) -> Iterator[list[tuple]]:
        """The cluster finished: what the last child sent before it exited (waiting up to 5 s for it)."""
        deadline = Deadline(5.0)
        while self._receiver is not None and not self._output_ended and not deadline.passed:
            if self._receiver.socket.poll(100, zmq.POLLIN):
                self._drain_output()
        rows, self._pending_out = self._pending_out, []
        if rows:
            yield rows

    def _drain_output(self) -> None:
        if self._receiver is None:
            return
        decode = self._out_codec.decode if self._out_codec is not None else None
        while (frame := self._receiver.try_recv()) is not None:
            kind = frame[:1]
            if kind == DATA and decode is not None:
                self._pending_out.extend(decode(row) for row in iter_rows(frame))
            elif kind == END_OF_OUTPUT:
                self._output_ended = True

    # --- following the attempts ---
    def _ensure_current(self) -> None:
        """Follow the supervisor to the newest child: fresh endpoints, then replay what it must see."""
        supervisor = self._supervisor
        while True:
            while supervisor.attempt is None and supervisor.outcome is None:  # no child yet
                supervisor.wait_for_change(0.1)
            supervisor.raise_if_failed()
            attempt = supervisor.attempt
            if attempt is None or attempt == self._data_attempt or supervisor.outcome is not None:
                return
            self._rebind(attempt)
            if self._replay():
                return

    def _rebind(self, attempt: int) -> None:
        self._close_channels()
        self._data_attempt = attempt
        self._output_ended = False
        self._blocked_since = None  # the new child has not refused anything yet
        if self.plan.input_schema is not None:
            self._sender = Sender(endpoint(self.workdir, "in", attempt), bind=True)
        if self.plan.output_schema is not None:
            self._receiver = Receiver(endpoint(self.workdir, "out", attempt), bind=True)

    def _close_channels(self) -> None:
        for sock in (self._sender, self._receiver):
            if sock is not None:
                sock.close()
        self._sender = self._receiver = None

    def _send_live(self, frame: bytes) -> None:
        self._ensure_current()
        if self._spill is not None:
            self._spill.append(frame)
        while not self._try_send(frame):
            self._ensure_current()
            if self._spill is not None:
                return  # the replay to the new attempt included this frame

    def _replay(self) -> bool:
        """Send the new child what it must see first: the spilled input, and the tail once input ended."""
        if self._sender is None:
            return True
        if self._spill is not None and not self._send_all(self._spill.frames()):
            return False
        return self._send_tail() if self._input_ended else True

    def _send_tail(self) -> bool:
        """End-of-epoch, the further epochs from the spill file, then end-of-input."""
        if self._sender is None:
            return True
        if not self._try_send(END_OF_EPOCH):
            return False
        for _ in range(self.plan.max_epoch - 1):
            if self._spill is not None and not self._send_all(self._spill.frames()):
                return False
            if not self._try_send(END_OF_EPOCH):
                return False
        return self._try_send(END_OF_INPUT)

    def _send_all(self, frames: Iterator[bytes]) -> bool:
        return all(self._try_send(frame) for frame in frames)

    def _try_send(self, frame: bytes) -> bool:
        """Send to the current child, draining its output while waiting (no deadlock on full queues).

        False when a new attempt replaced the child meanwhile; frames for a child that exited, or after
        the cluster finished, are dropped (True).
        """
        attempt, sender, supervisor = self._data_attempt, self._sender, self._supervisor
        if sender is None:
            return True
        poller = zmq.Poller()
        poller.register(sender.socket, zmq.POLLOUT)
        if self._receiver is not None:
            poller.register(self._receiver.socket, zmq.POLLIN)
        while not sender.try_send(frame):
            if self._blocked_since is None:
                self._blocked_since = time.monotonic()
            supervisor.raise_if_failed()
            if supervisor.outcome in ("stopped", "cancelled") or supervisor.exited_attempt == attempt:
                break  # nobody will read it
            if supervisor.attempt != attempt:
                return False
            ready = dict(poller.poll(100))  # until the child takes a frame, or sends output to drain
            if self._receiver is not None and self._receiver.socket in ready:
                self._drain_output()
        self._blocked_since = None
        return True


_LEN = struct.Struct("<I")


class _SpillFile:
    """Input frames on local disk, appended once and read back for later epochs and failovers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "w+b")  # noqa: SIM115 - lives as long as the runner

    def append(self, frame: bytes) -> None:
        self._fh.write(_LEN.pack(len(frame)))
        self._fh.write(frame)

    def frames(self) -> Iterator[bytes]:
        self._fh.flush()
        with open(self.path, "rb") as fh:
            while header := fh.read(4):
                (length,) = _LEN.unpack(header)
                yield fh.read(length)

    def close(self) -> None:
        self._fh.close()
