"""The PyFlink functions that host the roles of a cluster.

- :class:`AMFunction` — the application master, in a flat_map of parallelism 1 fed one element.
- :class:`RoleFunction` — a node without input (ps, or a worker in batch mode), in a flat_map of
  parallelism = count fed one element per subtask; the call lasts as long as the cluster.
- :class:`EncodeRows` — upstream of fed workers: encodes each input row with the typed codec and keys it
  to a worker, round-robin.
- :class:`FedRoleFunction` — a worker fed by Flink, a keyed co-process function of parallelism =
  count: input 1 is the encoded rows or Arrow frames (:mod:`.arrow_feed`), input 2 one trigger per worker (so a worker starts even when no
  row reaches it). Why keyed: PyFlink's non-keyed functions have no end-of-input hook (``close()`` runs
  only when the job ends) and emit nothing after their last element; an event-time timer at the end of
  time fires exactly when the bounded input ends (the final watermark) and may emit rows. A
  processing-time timer every ``poll_ms`` flushes partial frames and forwards output rows while input
  is quiet.

When Flink cancels the job, each role notices through :func:`~.harness.cancellation_probe` (in the
local mini-cluster the functions are threads of the client, which lives on): the AM stops without
failover and every node runner kills its child at once.

Each subtask's single key is chosen at build time so that Flink routes it to that very subtask
(:func:`dl_on_flink.operator.placement.subtask_keys`), making subtask *i* node *i*.
"""

from __future__ import annotations

import logging

from pyflink.common import Row
from pyflink.datastream import RuntimeContext, TimeDomain
from pyflink.datastream.functions import FlatMapFunction, KeyedCoProcessFunction, MapFunction

from dl_on_flink.errors import ClusterCancelledError
from dl_on_flink.framework.am import ApplicationMaster
from dl_on_flink.framework.codec import RowCodec, Schema
from dl_on_flink.framework.node import NodeRunner
from dl_on_flink.framework.plan import NodePlan
from dl_on_flink.operator.harness import cancellation_probe

log = logging.getLogger(__name__)

END_OF_TIME = 2**63 - 2  # the final watermark (Long.MAX_VALUE) fires every timer below it


class AMFunction(FlatMapFunction):
    def __init__(self, plan: NodePlan, has_input: bool) -> None:
        self.plan = plan
        self.has_input = has_input

    def open(self, runtime_context: RuntimeContext) -> None:
        self.flink_attempt = runtime_context.get_attempt_number()

    def flat_map(self, value):
        am = ApplicationMaster(
            self.plan.job_key, self.plan.config, self.plan.address_book, self.has_input, self.flink_attempt
        )
        try:
            am.run(cancelled=cancellation_probe())
        except ClusterCancelledError:
            log.info("cluster %s: the Flink job was cancelled; the AM stopped", self.plan.job_key)
        yield from ()


class RoleFunction(FlatMapFunction):
    def __init__(self, plan: NodePlan) -> None:
        self.plan = plan

    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()

    def flat_map(self, value):
        runner = NodeRunner(self.plan, self.index, cancelled=cancellation_probe()).start()
        try:
            for rows in runner.finish():
                for row in rows:
                    yield Row(*row)
        finally:
            runner.close()


class EncodeRows(MapFunction):
    """Row → Row(key of the target worker, codec bytes)."""

    def __init__(self, schema: Schema, keys: list[int]) -> None:
        self.schema = schema
        self.keys = keys

    def open(self, runtime_context: RuntimeContext) -> None:
        self.codec = RowCodec(self.schema)
        self.next = runtime_context.get_index_of_this_subtask()
        self.single_field = len(self.schema) == 1

    def map(self, value):
        key = self.keys[self.next % len(self.keys)]
        self.next += 1
        if self.single_field and not isinstance(value, Row | tuple | list):
            value = (value,)
        return Row(key, self.codec.encode(value))


class FedRoleFunction(KeyedCoProcessFunction):
    """A worker fed by Flink: forwards rows to its child, emits the child's rows."""

    def __init__(self, plan: NodePlan, poll_ms: int = 100, whole_frames: bool = False) -> None:
        self.plan = plan
        self.poll_ms = poll_ms
        self.whole_frames = whole_frames  # input 1 carries Arrow frames (the batched feed), not encoded rows

    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        self.runner: NodeRunner | None = None
        self.done = False

    def process_element1(self, value, ctx: KeyedCoProcessFunction.Context):
        """An input row: Row(key, codec bytes), or Row(key, Arrow frame) with ``whole_frames``."""
        self._start(ctx)
        if self.whole_frames:
            self.runner.write_frame(bytes(value[1]))
        else:
            self.runner.write(bytes(value[1]))
        yield from self._emit(self.runner.take_output())

    def process_element2(self, value, ctx: KeyedCoProcessFunction.Context):
        """This worker's trigger."""
        self._start(ctx)
        yield from ()

    def _start(self, ctx: KeyedCoProcessFunction.Context) -> None:
        if self.runner is None:
            self.runner = NodeRunner(self.plan, self.index, cancelled=cancellation_probe()).start()
            timers = ctx.timer_service()
            timers.register_event_time_timer(END_OF_TIME)
            timers.register_processing_time_timer(timers.current_processing_time() + self.poll_ms)

    def on_timer(self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext):
        if self.runner is None or self.done:
            return
        if ctx.time_domain() == TimeDomain.EVENT_TIME:
            self.runner.end_input()
            for rows in self.runner.finish():
                yield from self._emit(rows)
            self.done = True
            return
        self.runner.flush()
        yield from self._emit(self.runner.take_output())
        self.runner.raise_if_failed()
        timers = ctx.timer_service()
        timers.register_processing_time_timer(timers.current_processing_time() + self.poll_ms)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    @staticmethod
    def _emit(rows):
        for row in rows:
            yield Row(*row)
