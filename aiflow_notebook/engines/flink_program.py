"""Turn one job's nodes into a PyFlink DataStream program.

- ``read_dataset``: a file source over the dataset's uri — bounded (batch runtime mode) or, for a
  streaming job, a directory monitored for new files; each line becomes a row (CSV → list of fields,
  converted by the dataset's schema when it names types; ``.jsonl``/``.json`` → parsed JSON).
- ``transform``, ``predict``, ``evaluate``, ``user_define_operation``...: a ``map`` that applies the user's
  function to each row; returning ``None`` drops the row, returning a list of rows (``flat_map`` style) is
  not guessed: use ``properties={"flat": True}`` on the node.
- ``write_dataset``: a file sink writing one line per row into the dataset's uri, which becomes a
  directory of part files (as Flink and Spark do). Streaming jobs commit part files on checkpoints.

The program runs in its own process (see ``flink_job``) and on the local mini-cluster or a standalone
cluster alike. Rows travel between Python operators as pickled objects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.storage.part_files import clear_parts, format_row, parse_line

STREAM_MONITOR_INTERVAL_S = 1
CHECKPOINT_INTERVAL_MS = 1000
ROW_NODE_KINDS = {"transform", "predict", "evaluate", "model_validate", "user_define_operation", "train", "push_model"}


class FlinkProgramError(AIFlowError):
    """A job's nodes cannot be expressed as a Flink program (the message names the node)."""


def dataset_path(uri: str, base_dir: str | Path) -> Path:
    """A local path for a dataset uri (``file://`` or a path relative to the job's working directory)."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    path = Path(uri)
    return path if path.is_absolute() else Path(base_dir) / path


def build_program(env, job_name: str, nodes: list[dict[str, Any]], callables: dict[str, Callable],
                  *, streaming: bool, base_dir: str | Path) -> list[str]:
    """Add the job's operators to ``env``; returns the dataset directories the program writes."""
    from pyflink.common import Types

    set_runtime_mode(env, streaming=streaming)

    streams: dict[str, Any] = {}
    written: list[str] = []
    for node in nodes:
        name, kind = node["name"], node["kind"]
        fn = callables.get(name)
        if kind == "read_dataset":
            streams[name] = read_dataset_stream(env, node, job_name, fn, streaming=streaming, base_dir=base_dir)
        elif kind == "write_dataset":
            dataset = _dataset(node, job_name)
            source = _single_input(node, streams, job_name)
            if fn is not None:
                source = source.map(fn, output_type=Types.PICKLED_BYTE_ARRAY()).name(name).uid(f"map:{name}")
            uri = dataset["uri"]
            lines = source.filter(lambda row: row is not None).uid(f"drop-none:{name}").map(
                lambda row, uri=uri: format_row(row, uri), output_type=Types.STRING()).name(f"{name}: format") \
                .uid(f"format:{name}")
            written.append(write_lines(lines, node, job_name, streaming=streaming, base_dir=base_dir))
        elif kind in ROW_NODE_KINDS:
            if fn is None:
                raise FlinkProgramError(f"job {job_name!r}, node {name!r} ({kind}) has no function; on the flink "
                                        f"engine every {kind} needs one (it is applied to each row)")
            source = _single_input(node, streams, job_name)
            flat = bool(node.get("properties", {}).get("flat"))
            group_by = node.get("properties", {}).get("group_by")
            if group_by is not None:
                streams[name] = grouped(source, fn, group_by, node_name=name, job_name=job_name, streaming=streaming)
            elif flat:
                streams[name] = source.flat_map(lambda row, fn=fn: fn(row) or [],
                                                output_type=Types.PICKLED_BYTE_ARRAY()).name(name).uid(f"map:{name}")
            else:
                streams[name] = source.map(fn, output_type=Types.PICKLED_BYTE_ARRAY()).uid(f"map:{name}").filter(
                    lambda row: row is not None).name(name).uid(f"drop-none:{name}")
        else:
            raise FlinkProgramError(f"job {job_name!r}, node {name!r}: node kind {kind!r} is not supported by the "
                                    "flink engine")
    if not written:
        raise FlinkProgramError(f"job {job_name!r} writes no dataset: a Flink program needs a sink "
                                "(add af.write_dataset(...))")
    return written


def grouped(stream, fn: Callable, group_by: Any, *, node_name: str, job_name: str, streaming: bool):
    """``transform(..., properties={"group_by": key})`` on a batch job: the rows are grouped by key (a
    column index, or a key of dict rows) and ``fn(rows)`` is called once per group with all its rows;
    it returns the group's output rows (a list). This is how per-key aggregates are computed and joined
    back to each row (a user's click-through rate on every impression of that user). The groups are spread
    over the job's parallelism by key."""
    from pyflink.common import Types

    if streaming:
        raise FlinkProgramError(f"job {job_name!r}, node {node_name!r}: group_by needs a bounded input (a batch "
                                "job); a stream's groups never end")
    key = lambda row, k=group_by: row[k]  # noqa: E731 -- a column index, or a key of dict rows
    return (stream.key_by(lambda row, key=key: str(key(row)), key_type=Types.STRING())
            .process(_GroupFunction(fn), output_type=Types.PICKLED_BYTE_ARRAY()).name(node_name).uid(f"group:{node_name}"))


class _GroupFunction:
    """A keyed process function collecting a key's rows; when the key's input ends (a batch job processes
    its input sorted by key and fires a key's end-of-time timer when the key is done) it emits
    ``fn(rows)``. The rows are held in the operator's memory, not in Flink state: in batch mode only the
    current key's rows are held at a time (and PyFlink 2.3's list state loses rows here). Built lazily so
    that importing this module does not import PyFlink."""

    def __new__(cls, fn: Callable):
        from pyflink.datastream import KeyedProcessFunction

        class GroupFunction(KeyedProcessFunction):
            def open(self, runtime_context):
                self.groups: dict[str, list] = {}

            def process_element(self, row, ctx):
                key = ctx.get_current_key()
                if key not in self.groups:
                    self.groups[key] = []
                    ctx.timer_service().register_event_time_timer(_END_OF_TIME)
                self.groups[key].append(row)

            def on_timer(self, timestamp, ctx):
                yield from fn(self.groups.pop(ctx.get_current_key(), [])) or []

        return GroupFunction()


_END_OF_TIME = 2**63 - 1


def stateful_operators(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """The operators of a job's program that keep state in a savepoint, uid -> dataset uri: each file
    source (files done, positions in files) and each file sink (part files in progress). Every operator
    gets a stable uid from its node's name, so a restarted program maps the savepoint's state back."""
    found = {}
    for node in nodes:
        uri = (node.get("dataset") or {}).get("uri")
        if node["kind"] == "read_dataset":
            found[source_uid(node["name"])] = uri
        elif node["kind"] == "write_dataset":
            found[sink_uid(node["name"])] = uri
    return found


def source_uid(node: str) -> str:
    return f"source:{node}"


def sink_uid(node: str) -> str:
    return f"sink:{node}"


def read_dataset_stream(env, node: dict[str, Any], job_name: str, fn: Callable | None = None, *,
                        streaming: bool, base_dir: str | Path):
    """The rows of a ``read_dataset`` node as a stream of pickled Python rows (see ``parse_line``).

    A file source over the dataset's uri: bounded, or for a ``streaming`` job a directory monitored for new
    files. ``fn`` (the node's function, if any) is applied to each parsed row. Shared by the flink engine
    and the pytorch/tensorflow engines (``dl_job``), which feed these rows to the training cluster.
    """
    from pyflink.common import Types

    name = node["name"]
    dataset = _dataset(node, job_name)
    lines = dataset_lines(env, node, job_name, streaming=streaming, base_dir=base_dir)
    uri, schema = dataset["uri"], dataset.get("schema")
    rows = lines.map(lambda line, uri=uri, schema=schema: parse_line(line, uri, schema),
                     output_type=Types.PICKLED_BYTE_ARRAY()).name(f"{name}: parse").uid(f"parse:{name}")
    if fn is not None:
        rows = rows.map(fn, output_type=Types.PICKLED_BYTE_ARRAY()).name(name).uid(f"map:{name}")
    return rows


def set_runtime_mode(env, *, streaming: bool) -> None:
    """Streaming jobs run in STREAMING mode with a checkpoint (a commit of the part files) every
    ``CHECKPOINT_INTERVAL_MS``; batch jobs in BATCH mode."""
    from pyflink.datastream import RuntimeExecutionMode

    if streaming:
        env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
        env.enable_checkpointing(CHECKPOINT_INTERVAL_MS)
    else:
        env.set_runtime_mode(RuntimeExecutionMode.BATCH)


def dataset_lines(env, node: dict[str, Any], job_name: str, *, streaming: bool, base_dir: str | Path):
    """The text lines of a ``read_dataset`` node's files: a bounded file source, or for a ``streaming``
    job a directory monitored for new files (uid ``source:<node>``, which savepoints refer to)."""
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    name = node["name"]
    dataset = _dataset(node, job_name)
    path = dataset_path(dataset["uri"], base_dir)
    if streaming:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FlinkProgramError(f"job {job_name!r}, node {name!r}: dataset {dataset['name']!r} has no data "
                                f"at {path} (was it written by an upstream job?)")
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path))
    if streaming:
        builder = builder.monitor_continuously(Duration.of_seconds(STREAM_MONITOR_INTERVAL_S))
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), f"{name} <- {dataset['name']}") \
        .uid(source_uid(name))


def write_lines(lines, node: dict[str, Any], job_name: str, *, streaming: bool, base_dir: str | Path) -> str:
    """Sink a stream of text lines into a ``write_dataset`` node's directory as part files committed on
    checkpoints (uid ``sink:<node>``); a batch job's output replaces the dataset. Returns the directory."""
    from pyflink.common import Encoder
    from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, RollingPolicy

    dataset = _dataset(node, job_name)
    path = dataset_path(dataset["uri"], base_dir)
    path.mkdir(parents=True, exist_ok=True)
    if not streaming:
        clear_parts(path)  # a batch job's output replaces the dataset (a new run, new data)
    sink = (FileSink.for_row_format(str(path), Encoder.simple_string_encoder())
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
            .build())
    lines.sink_to(sink).name(f"{node['name']} -> {dataset['name']}").uid(sink_uid(node["name"]))
    return str(path)


def _dataset(node: dict[str, Any], job_name: str) -> dict[str, Any]:
    dataset = node.get("dataset") or {}
    if not dataset.get("uri"):
        raise FlinkProgramError(f"job {job_name!r}, node {node['name']!r}: dataset {dataset.get('name')!r} has no uri; "
                                "give one (uri=...) so Flink knows where to read or write")
    return dataset


def _single_input(node: dict[str, Any], streams: dict[str, Any], job_name: str):
    inputs = node.get("inputs") or []
    if len(inputs) != 1:
        raise FlinkProgramError(f"job {job_name!r}, node {node['name']!r} has {len(inputs)} inputs; the flink engine "
                                "supports exactly one per node (combine rows in one transform)")
    source_name, index = inputs[0]
    if index not in (0, -1):
        raise FlinkProgramError(f"job {job_name!r}, node {node['name']!r} reads output {index} of {source_name!r}; "
                                "multi-output nodes are not supported by the flink engine")
    return streams[source_name]
