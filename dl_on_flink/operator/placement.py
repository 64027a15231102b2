"""Placing a cluster's roles into a PyFlink job (the DataStream API).

The job gets, for one cluster:

- ``am``: ``from_collection([0]) → flat_map(AMFunction)``, parallelism 1;
- per node type without input: ``from_collection([0..n-1]) → rebalance → flat_map(RoleFunction)``,
  parallelism n (one element per subtask, so every subtask starts exactly one node);
- for the fed node type (``worker``) when there is input: the input as Arrow batches, one frame per
  Flink record (:mod:`.arrow_feed`; or, with the cluster property ``feed=row``, ``map(EncodeRows)``
  one record per row) → ``key_by``, connected with one keyed trigger per worker (so a worker starts even
  if it receives no rows) → ``process(FedRoleFunction)``, parallelism n. Its output is the inference result.

Training: every stream ends in a discarding sink (Flink leaves sink-less branches out of a job).
Inference: the returned stream is the workers' output unioned with the other roles' (empty) streams.

Tables, as in dl-on-flink: ``input`` may be a ``pyflink.table.Table`` (a DataStream input becomes one
for the batched feed), and the first argument a ``StatementSet``: then the cluster's streams
go into that statement set (training: one blackhole insert of every role's stream; inference: the
result comes back as a Table, which the caller inserts) and ``statement_set.execute()`` runs them.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors import Sink
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, StatementSet, StreamTableEnvironment, Table, TableDescriptor
from pyflink.table import Schema as TableSchema

from dl_on_flink.errors import ConfigError
from dl_on_flink.framework.address_book import default_address_book
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.codec import Schema
from dl_on_flink.framework.plan import NodePlan
from dl_on_flink.framework.process import import_root
from dl_on_flink.operator.arrow_feed import arrow_frames, as_table, batch_rows_of, feed_of
from dl_on_flink.operator.functions import AMFunction, EncodeRows, FedRoleFunction, RoleFunction

NODE_INPUT_TYPE = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])


def place_cluster(
    env: StreamExecutionEnvironment | StatementSet,
    config: ClusterConfig,
    *,
    input: DataStream | Table | None = None,
    max_epoch: int = 1,
    output_schema: Any = None,
    name: str | None = None,
) -> DataStream | Table | None:
    """Add the AM and every node of ``config`` to ``env`` (or a StatementSet); return the output.

    Returns None when there is no ``output_schema`` (training); the caller runs ``env.execute()`` (or
    ``statement_set.execute()``). With an output schema it returns the workers' output: a DataStream, or
    a Table when ``env`` is a StatementSet.
    """
    if isinstance(env, StatementSet):
        return _place_in_statement_set(env, config, input, max_epoch, output_schema, name)
    if not isinstance(env, StreamExecutionEnvironment):
        raise ConfigError(
            f"expected a pyflink StreamExecutionEnvironment or StatementSet, got {type(env).__name__}"
        )
    if isinstance(input, Table):
        _table_env(input._t_env)
    fed_output, side_streams = _place(env, config, input, max_epoch, output_schema, name)
    if output_schema is not None:
        return fed_output.union(*side_streams)
    for stream in [*side_streams, *([fed_output] if fed_output is not None else [])]:
        _discard(stream)
    return None


def place_training(
    env: StreamExecutionEnvironment | StatementSet, config: ClusterConfig, kind: type[ClusterConfig], *,
    input: DataStream | Table | None, max_epoch: int,
) -> None:
    """``train`` of the framework whose config class is ``kind``: :func:`place_cluster` for such a config."""
    _check_kind(config, kind)
    place_cluster(env, config, input=input, max_epoch=max_epoch, name=kind.framework)


def place_inference(
    env: StreamExecutionEnvironment | StatementSet, config: ClusterConfig, kind: type[ClusterConfig], *,
    input: DataStream | Table, output_schema: Any,
) -> DataStream | Table:
    """``inference`` of the framework whose config class is ``kind``: the workers' output rows."""
    _check_kind(config, kind)
    if input is None or output_schema is None:
        raise ConfigError("inference needs input and an output_schema")
    return place_cluster(env, config, input=input, output_schema=output_schema, name=kind.framework)


def _check_kind(config: Any, kind: type[ClusterConfig]) -> None:
    if not isinstance(config, kind):
        raise ConfigError(f"expected a {kind.__name__}, got {type(config).__name__}")


def _place_in_statement_set(
    statement_set: StatementSet, config: ClusterConfig, input: DataStream | Table | None, max_epoch: int,
    output_schema: Any, name: str | None,
) -> Table | None:
    t_env = _table_env(statement_set._t_env)
    env = StreamExecutionEnvironment(t_env._j_tenv.execEnv())
    fed_output, side_streams = _place(env, config, input, max_epoch, output_schema, name)
    streams = [*([fed_output] if fed_output is not None else []), *side_streams]
    if output_schema is not None:
        return t_env.from_data_stream(streams[0].union(*streams[1:]))
    roles = t_env.from_data_stream(streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0])
    blackhole = TableDescriptor.for_connector("blackhole").schema(
        TableSchema.new_builder().column("f0", DataTypes.INT()).build()
    ).build()
    statement_set.add_insert(blackhole, roles)
    return None


def _table_env(t_env: Any) -> StreamTableEnvironment:
    if not isinstance(t_env, StreamTableEnvironment):
        raise ConfigError(
            f"tables must come from a StreamTableEnvironment (StreamTableEnvironment.create(env)), "
            f"not a {type(t_env).__name__}"
        )
    return t_env


def _place(
    env: StreamExecutionEnvironment, config: ClusterConfig, input: DataStream | Table | None, max_epoch: int,
    output_schema: Any, name: str | None,
) -> tuple[DataStream | None, list[DataStream]]:
    """Add the roles to ``env``: (the fed workers' stream or None, the other roles' streams)."""
    fed_type = _fed_node_type(config, input, max_epoch, output_schema)
    counts = config.get_node_type_count_map()
    _use_this_python(env)
    job_key = f"{name or config.framework}-{uuid.uuid4().hex[:12]}"
    address_book = config.get_address_book() or default_address_book()
    in_schema = _input_schema(input)
    out_schema = Schema.of(output_schema) if output_schema is not None else None

    def plan(node_type: str, fed: bool) -> NodePlan:
        return NodePlan(
            job_key, config, node_type, address_book,
            input_schema=in_schema if fed else None,
            output_schema=out_schema if fed else None,
            max_epoch=max_epoch if fed else 1,
        )

    # With an output, the other roles' (empty) streams are unioned into it rather than given sinks of
    # their own: DataStream.execute_and_collect() keeps only what its stream depends on.
    role_type = out_schema.to_flink() if out_schema is not None else Types.INT()
    side_streams = [
        env.from_collection([0], type_info=Types.INT()).name(f"{job_key} am trigger")
        .flat_map(AMFunction(plan("am", False), has_input=input is not None), output_type=role_type)
        .name(f"{job_key} am").set_parallelism(1)
    ]
    fed_output = None
    for node_type, count in counts.items():
        if node_type == fed_type:
            fed_output = _place_fed(env, input, plan(node_type, True), count, job_key, out_schema, feed_of(config))
        else:
            side_streams.append(
                env.from_collection(list(range(count)), type_info=Types.INT()).name(f"{job_key} {node_type} trigger")
                .rebalance()
                .flat_map(RoleFunction(plan(node_type, False)), output_type=role_type)
                .name(f"{job_key} {node_type}").set_parallelism(count)
            )
    return fed_output, side_streams


def _input_schema(input: DataStream | Table | None) -> Schema | None:
    if input is None:
        return None
    if isinstance(input, Table):
        return Schema.from_table(input)
    return Schema.from_flink(input.get_type())


def _fed_node_type(config: ClusterConfig, input: DataStream | Table | None, max_epoch: int,
                   output_schema: Any) -> str | None:
    """The node type the input feeds (None without input); ConfigError for arguments that cannot work."""
    if input is not None and not isinstance(input, DataStream | Table):
        raise ConfigError(f"input must be a pyflink DataStream or Table, got {type(input).__name__}")
    if not isinstance(max_epoch, int) or max_epoch < 1:
        raise ConfigError(f"max_epoch must be an int >= 1, got {max_epoch!r}")
    if output_schema is not None and input is None:
        raise ConfigError("an output schema needs input: inference(env, input, config, output_schema)")
    fed_type = config.input_node_type if input is not None else None
    if fed_type is not None and config.get_node_count(fed_type) == 0:
        raise ConfigError(f"input is given but the cluster has no {fed_type!r} nodes to feed")
    return fed_type


def _place_fed(
    env: StreamExecutionEnvironment, input: DataStream | Table, plan: NodePlan, count: int, job_key: str,
    out_schema: Schema | None, feed: str,
) -> DataStream:
    """The fed workers: ``input`` as Arrow batches (feed "arrow", :mod:`.arrow_feed`) or encoded row by
    row (feed "row"), keyed to the workers."""
    max_parallelism = max(128, count)
    keys = subtask_keys(count, max_parallelism)
    if feed == "arrow":
        table = input if isinstance(input, Table) else as_table(input, env)
        encoded = arrow_frames(table, plan.input_schema, keys, batch_rows_of(plan.config))
    else:
        if isinstance(input, Table):
            input = input._t_env.to_data_stream(input)
        encoded = input.map(EncodeRows(plan.input_schema, keys), output_type=NODE_INPUT_TYPE).name(f"{job_key} encode")
    triggers = env.from_collection(keys, type_info=Types.INT()).name(f"{job_key} {plan.node_type} trigger")
    output_type = out_schema.to_flink() if out_schema is not None else Types.INT()
    return (
        encoded.key_by(lambda row: row[0], key_type=Types.INT())
        .connect(triggers.key_by(lambda key: key, key_type=Types.INT()))
        .process(FedRoleFunction(plan, whole_frames=feed == "arrow"), output_type=output_type)
        .name(f"{job_key} {plan.node_type}")
        .set_parallelism(count)
        .set_max_parallelism(max_parallelism)
    )


def subtask_keys(parallelism: int, max_parallelism: int) -> list[int]:
    """For each subtask i of a keyed operator, an INT key that Flink routes to subtask i.

    Asks Flink's own ``KeyGroupRangeAssignment`` (through the gateway) about ``Row.of(key)`` — the key
    object PyFlink's ``key_by`` produces — rather than re-implementing its hashing.
    """
    gateway = get_gateway()
    assign = gateway.jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    row_of = gateway.jvm.org.apache.flink.types.Row.of
    found: dict[int, int] = {}
    candidate = 0
    while len(found) < parallelism:
        fields = gateway.new_array(gateway.jvm.java.lang.Object, 1)
        fields[0] = candidate
        found.setdefault(assign(row_of(fields), max_parallelism, parallelism), candidate)
        candidate += 1
    return [found[i] for i in range(parallelism)]


def _discard(stream: DataStream) -> None:
    gateway = get_gateway()
    stream.sink_to(Sink(gateway.jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())).name(
        "discard"
    )


def _use_this_python(env: StreamExecutionEnvironment) -> None:
    """Make the Python workers run this interpreter and import this dl_on_flink.

    PyFlink starts workers with ``python`` from PATH unless ``python.executable`` is set (we default it to
    this interpreter), and a dl_on_flink that is not installed (a source checkout on PYTHONPATH) is found
    by the workers only if its directory is on ``python.pythonpath``.
    """
    gateway = get_gateway()
    config = gateway.jvm.org.apache.flink.python.util.PythonConfigUtil.getEnvironmentConfig(
        env._j_stream_execution_environment
    )
    if not config.getString("python.executable", ""):
        env.set_python_executable(sys.executable)
    root = import_root()
    paths = [p for p in config.getString("python.pythonpath", "").split(os.pathsep) if p]
    if root not in paths:
        config.setString("python.pythonpath", os.pathsep.join([*paths, root]))
