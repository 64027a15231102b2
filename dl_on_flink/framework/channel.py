"""The data channel between a Flink operator and its node's child process.

Why ZeroMQ ``ipc://`` and not a shared-memory ring (measured by ``bench/dl_bench.py --only transport``
on the shared 2-core machine, 1 KB rows in 128 KB frames): ZeroMQ moved ≈ 390 MB/s between two Python
processes, a single-producer/single-consumer ring in ``multiprocessing.shared_memory`` ≈ 480 MB/s — but
only by spinning both ends, which steals a core from the training loop on a 2-core machine. Both are
about twice what the per-row codec work allows (≈ 220 MB/s end to end), so the transport is not the
bottleneck; ZeroMQ sleeps in the kernel when idle, and a ``zmq.Poller`` waits on the input and output
sockets at once (the operator drains results while input is back-pressured).

Back-pressure: the sending socket holds at most ``HWM`` frames; when the reader lags, ``send`` waits (in
slices, so the caller can notice a failover or a dead peer) and Flink's own back-pressure takes over.

A channel carries *frames*. Each frame starts with one kind byte:

- ``D`` — data: rows, each a u32 length followed by the row's codec bytes (:mod:`.codec`),
- ``A`` — data: one Arrow record batch (:mod:`.batches`; the batched feed from a Table or DataStream),
- ``E`` — end of epoch, ``X`` — end of input (operator → child),
- ``O`` — end of output (child → operator: the entry returned, every row it wrote was sent before this).

Endpoints are paths in a private directory created for one node, one per attempt, so a restarted child
never receives frames meant for the process it replaces.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from aiflow_notebook.core.waiting import Deadline
from dl_on_flink.errors import ChannelError
from dl_on_flink.framework.codec import RowCodec

DATA, END_OF_EPOCH, END_OF_INPUT, END_OF_OUTPUT = b"D", b"E", b"X", b"O"
ARROW = b"A"  # an Arrow record batch (dl_on_flink.framework.batches): the batched feed
FRAME_BYTES = 128 * 1024
HWM = 8
_LEN = struct.Struct("<I")


class FrameBuilder:
    """Packs encoded rows into data frames of about ``frame_bytes``."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._buf = bytearray(DATA)
        self.rows = 0

    def add(self, row_bytes: bytes) -> bytes | None:
        """Append one row; return a full frame when the buffer reached ``frame_bytes``."""
        self._buf += _LEN.pack(len(row_bytes))
        self._buf += row_bytes
        self.rows += 1
        if len(self._buf) >= self.frame_bytes:
            return self.take()
        return None

    def take(self) -> bytes | None:
        """The pending rows as a frame (None when there are none)."""
        if self.rows == 0:
            return None
        frame, self._buf, self.rows = bytes(self._buf), bytearray(DATA), 0
        return frame


def iter_rows(frame: bytes | memoryview) -> Iterator[memoryview]:
    """The encoded rows of a data frame, as zero-copy views."""
    view = memoryview(frame)
    offset, end = 1, len(view)
    while offset < end:
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        yield view[offset : offset + length]
        offset += length


def endpoint(directory: Path, direction: str, attempt: int) -> str:
    """The channel ``direction`` ("in": operator → child, "out": child → operator) of ``attempt``."""
    return f"ipc://{directory}/{direction}-{attempt}"


class _End:
    """One end of a channel: a ZeroMQ socket bound (operator side) or connected (child side)."""

    def __init__(self, kind: int, endpoint: str, *, bind: bool, options: dict[int, int]) -> None:
        self.endpoint = endpoint
        self._sock = zmq.Context.instance().socket(kind)
        for option, value in options.items():
            self._sock.setsockopt(option, value)
        (self._sock.bind if bind else self._sock.connect)(endpoint)

    @property
    def socket(self) -> zmq.Socket:
        """For a ``zmq.Poller`` that waits on this and other sockets at once."""
        return self._sock

    def close(self) -> None:
        self._sock.close()


class Sender(_End):
    """The sending end (PUSH) of one channel; ``bind=True`` on the operator side, False in the child."""

    def __init__(self, endpoint: str, *, bind: bool, hwm: int = HWM) -> None:
        super().__init__(zmq.PUSH, endpoint, bind=bind,
                         options={zmq.SNDHWM: hwm, zmq.LINGER: 0 if bind else 30_000})

    def send(self, frame: bytes, timeout: float | None = None, *, still_wanted: Callable[[], bool] | None = None) -> bool:
        """Send one frame, waiting while the reader lags (back-pressure).

        Waits in 100 ms slices; between slices ``still_wanted()`` may say to give up (the reader died or a
        failover replaced it). Returns False when the frame was not sent (timeout or given up).
        """
        deadline = Deadline(timeout)
        while not self.try_send(frame):
            if still_wanted is not None and not still_wanted():
                return False
            if deadline.passed:
                return False
            self._sock.poll(100, zmq.POLLOUT)
        return True

    def try_send(self, frame: bytes) -> bool:
        """Send without waiting; False when the reader's queue is full (or no reader is connected)."""
        try:
            self._sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 16384)
            return True
        except zmq.Again:
            return False


class Receiver(_End):
    """The receiving end (PULL) of one channel."""

    def __init__(self, endpoint: str, *, bind: bool, hwm: int = HWM) -> None:
        super().__init__(zmq.PULL, endpoint, bind=bind, options={zmq.RCVHWM: hwm, zmq.LINGER: 0})

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next frame, or None if none arrived within ``timeout`` seconds (None = wait forever)."""
        if timeout is not None and not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        return self._sock.recv()

    def try_recv(self) -> bytes | None:
        """The next frame if one is queued, else None (never waits)."""
        try:
            return self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None


class RowReader:
    """Rows from Flink, in the child: one epoch per iteration of :meth:`read_epoch`.

    ``read_epoch()`` yields decoded rows until the end-of-epoch marker; after the last epoch it yields
    nothing and :attr:`end_of_input` is True. ``read_batches(n)`` reads the same epoch as column batches of
    ``n`` rows (:meth:`.batches.BatchDecoder.columns`). Frames of rows (``D``) and Arrow frames (``A``,
    the batched feed) may both arrive. A timeout (seconds) bounds how long one frame may take.
    ``rows_read`` and ``waiting`` (blocked until Flink sends more) are what the node reports as progress.
    """

    def __init__(self, receiver: Receiver, codec: RowCodec, timeout: float | None = None) -> None:
        self._receiver = receiver
        self._codec = codec
        self._timeout = timeout
        self._batches = None  # a BatchDecoder, made at the first Arrow frame (pyarrow is imported then)
        self.epochs_completed = 0
        self.end_of_input = False
        self.rows_read = 0
        self.waiting = False

    def read_epoch(self) -> Iterator[tuple]:
        decode = self._codec.decode
        for kind, frame in self._epoch_frames():
            if kind == DATA:
                for row in iter_rows(frame):
                    self.rows_read += 1
                    yield decode(row)
            else:
                batch = self._decoder().batch(memoryview(frame)[1:])
                self.rows_read += batch.num_rows
                yield from self._decoder().rows(batch)

    def read_batches(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """This epoch as dicts of columns, ``batch_size`` rows each (the last one may hold fewer)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        decoder = self._decoder()
        pending, count = [], 0
        for kind, frame in self._epoch_frames():
            batch = self._rows_as_batch(frame) if kind == DATA else decoder.batch(memoryview(frame)[1:])
            self.rows_read += batch.num_rows
            pending.append(batch)
            count += batch.num_rows
            while count >= batch_size:
                taken, rest, need = [], [], batch_size
                for part in pending:
                    if need == 0:
                        rest.append(part)
                    elif part.num_rows <= need:
                        taken.append(part)
                        need -= part.num_rows
                    else:
                        taken.append(part.slice(0, need))
                        rest.append(part.slice(need))
                        need = 0
                pending, count = rest, count - batch_size
                yield decoder.columns(taken)
        if count:
            yield decoder.columns(pending)

    def __iter__(self) -> Iterator[tuple]:
        """All rows of all remaining epochs."""
        while not self.end_of_input:
            yield from self.read_epoch()

    def _epoch_frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(kind, frame) of each data frame up to the end of this epoch (or of the input)."""
        while not self.end_of_input:
            self.waiting = True
            try:
                frame = self._receiver.recv(self._timeout)
            finally:
                self.waiting = False
            if frame is None:
                raise ChannelError(f"no data from Flink on {self._receiver.endpoint} for {self._timeout} s")
            kind = frame[:1]
            if kind in (DATA, ARROW):
                yield kind, frame
            elif kind == END_OF_EPOCH:
                self.epochs_completed += 1
                return
            elif kind == END_OF_INPUT:
                self.end_of_input = True
                return
            else:
                raise ChannelError(f"unknown frame kind {kind!r} on {self._receiver.endpoint}")

    def _decoder(self):
        if self._batches is None:
            from dl_on_flink.framework.batches import BatchDecoder

            self._batches = BatchDecoder(self._codec.schema)
        return self._batches

    def _rows_as_batch(self, frame: bytes):
        """A frame of rows (the per-record feed) as a record batch, for ``read_batches``."""
        import pyarrow as pa

        from dl_on_flink.framework.batches import arrow_schema

        schema = arrow_schema(self._codec.schema)
        rows = [self._codec.decode(row) for row in iter_rows(frame)]
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
        return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                                          schema=schema)


class RowWriter:
    """Rows to Flink, from the child. Rows are batched; ``flush()`` sends a partial batch at once.

    A batch is also sent when ``max_delay`` seconds passed since the last send, so a slow trickle of
    results (streaming inference) reaches Flink promptly.
    """

    def __init__(self, sender: Sender, codec: RowCodec, max_delay: float = 0.05) -> None:
        self._sender = sender
        self._codec = codec
        self._frames = FrameBuilder()
        self._max_delay = max_delay
        self._last_send = time.monotonic()
        self.closed = False
        self.rows_written = 0
        self.waiting = False  # blocked by Flink's back-pressure

    def write(self, row: Any) -> None:
        if self.closed:
            raise ChannelError("write to a closed RowWriter")
        frame = self._frames.add(self._codec.encode(row))
        self.rows_written += 1
        if frame is not None:
            self._send(frame)
        elif time.monotonic() - self._last_send >= self._max_delay:
            self.flush()

    def flush(self) -> None:
        frame = self._frames.take()
        if frame is not None:
            self._send(frame)

    def close(self) -> None:
        """Send what is pending and the end-of-output marker (idempotent)."""
        if not self.closed:
            self.flush()
            self._send(END_OF_OUTPUT)
            self.closed = True

    def _send(self, frame: bytes) -> None:
        self.waiting = True
        try:
            self._sender.send(frame)
        finally:
            self.waiting = False
        self._last_send = time.monotonic()
