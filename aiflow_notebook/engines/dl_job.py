"""The pytorch and tensorflow engines: a job's ``af.train`` node runs as a ``dl_on_flink`` cluster.

A job of engine ``pytorch`` or ``tensorflow`` holds one ``train`` node whose input is one or more
``read_dataset`` nodes of the same job (or no input at all). It becomes one PyFlink job on the local
mini-cluster:

- each ``read_dataset`` of a CSV dataset whose schema holds only numbers and strings (a bounded job, no
  function of its own) is read by Flink's CSV format as a Table, typed in Java; others are the same file
  source as on the flink engine (``flink_program.read_dataset_stream``), parsed in Python; either way the
  rows are typed by the dataset's schema (``{"x": "float", ...}``: int → BIGINT, float →
  DOUBLE, str → STRING, bool → INT, bytes → BYTES, or a dl_on_flink type such as ``ARRAY<FLOAT>``) and
  fed to the workers;
- the trainer is the node entry: ``trainer(ctx)`` receives the framework context — a
  ``dl_on_flink.pytorch.PyTorchContext`` or ``dl_on_flink.tensorflow.TFContext`` — *not* the rows (as
  on the python engine); it reads its share with ``ctx.get_dataset_from_flink()`` /
  ``ctx.get_tfdataset_from_flink()``;
- job properties: ``workers`` (default 2), ``ps`` (tensorflow parameter servers, default 0; with ps,
  worker 0 is the chief), ``epochs`` (``max_epoch``, default 1), ``max_failover`` (default 3); every
  other property is a cluster property (``ctx.get_property(k)``, a string);
- the model: the trainer returns the trained model on rank 0 (TensorFlow: worker 0); the other nodes
  return None; returning ``(model, metrics)`` registers the dict of training metrics with the version.
  The entry wrapper saves it with ``model_io.save_model`` in that node's process (a
  ``torch.nn.Module`` — a DistributedDataParallel is unwrapped to its ``.module`` — is saved as a
  ``model_io.TorchModel`` so ``af.predict`` can apply it) and writes the URI (and metrics) into this job run's
  directory; when the Flink job has finished, the URI is registered as a new version (GENERATED) of the
  node's model, with lineage to this job run.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.files import write_atomic
from aiflow_notebook.engines.flink_environment import new_environment, program_name
from aiflow_notebook.engines.flink_remote import ClusterJobFailed, run_on_cluster
from aiflow_notebook.engines.flink_rest import cluster_address
from aiflow_notebook.engines.model_io import TorchModel, save_model, split_trained
from aiflow_notebook.sdk.capture import load_payload

ENGINES = ("pytorch", "tensorflow")
DEFAULT_WORKERS = 2
RESULT_FILE = "model.json"  # {"uri": ..., "metrics": ...} written by the chief
ERROR_TAIL_LINES = 12
_RESERVED = {"workers", "ps", "epochs", "max_failover"}
_SCHEMA_TYPES = {
    "int": "BIGINT", "integer": "BIGINT", "bigint": "BIGINT", "long": "BIGINT",
    "float": "DOUBLE", "double": "DOUBLE", "real": "DOUBLE",
    "bool": "INT", "boolean": "INT",
    "str": "STRING", "string": "STRING", "text": "STRING",
    "bytes": "BYTES",
}


class DLJobError(AIFlowError):
    """A pytorch/tensorflow job that cannot run, or whose training failed (names the job and the node)."""


def run_pytorch_job(spec: dict[str, Any]) -> None:
    _run(spec, "pytorch")


def run_tensorflow_job(spec: dict[str, Any]) -> None:
    _run(spec, "tensorflow")


def _run(spec: dict[str, Any], framework: str) -> None:
    job = spec["job"]
    where = _where(spec, framework)
    node = _train_node(job, where)
    result = _run_dir(spec) / RESULT_FILE
    result.unlink(missing_ok=True)
    address = cluster_address(job.get("platform"))
    if address is not None:
        # the program is built by `flink run` (flink_main → build_program) and its roles run in the
        # cluster's TaskManagers; they find the AM through the event bus, not through files
        try:
            run_on_cluster(spec, address)
        except ClusterJobFailed as exc:
            raise _training_failed(exc, where, node["name"]) from None
    else:
        env = build_program(spec, framework)
        try:
            env.execute(program_name(spec))
        except Exception as exc:
            raise _training_failed(exc, where, node["name"]) from None

    if not result.exists():
        print(f"[aiflow] {where}: the trainer of node {node['name']!r} returned no model on rank 0; "
              "no model version registered", flush=True)
        return
    if not node.get("model"):
        return
    # the job process has AIFLOW_META_URL and AIFLOW_EVENT_URL: MODEL_GENERATED reaches the scheduler's bus
    from aiflow_notebook.meta import default_store

    store = default_store()
    store.register_model(node["model"])
    saved = json.loads(result.read_text())
    version = store.register_model_version(node["model"], uri=saved["uri"], metrics=saved.get("metrics"),
                                           job_run=spec.get("job_run_id"))
    print(f"[aiflow] registered model {node['model']} version {version.version}", flush=True)


def build_program(spec: dict[str, Any], framework: str, address_book: Any = None):
    """The job's PyFlink program (a ``StreamExecutionEnvironment``): its inputs feeding a dl_on_flink cluster.

    ``address_book``: where the AM publishes its address (None: dl_on_flink's default, files on this
    machine); a job on a Flink cluster passes a ``BusAddressBook``.
    """
    job = spec["job"]
    where = _where(spec, framework)
    node = _train_node(job, where)
    callables = dict(load_payload(base64.b64decode(job["payload"]))["callables"])
    trainer = callables.get(node["name"])
    if trainer is None:
        raise DLJobError(f"{where}, node {node['name']!r}: af.train(...) needs trainer=fn(ctx)")
    properties = dict(job.get("properties") or {})
    workers = _int_property(properties, "workers", DEFAULT_WORKERS, where)
    ps = _int_property(properties, "ps", 0, where)
    epochs = _int_property(properties, "epochs", 1, where)
    max_failover = _int_property(properties, "max_failover", 3, where)
    if framework == "pytorch" and ps:
        raise DLJobError(f"{where}: 'ps' (parameter servers) is for the tensorflow engine; pytorch has only workers")

    entry = TrainerEntry(trainer, framework, node.get("model"), str(_run_dir(spec) / RESULT_FILE))
    env = new_environment(spec)
    feed = _input_stream(env, spec, job, node, callables, where)
    if framework == "pytorch":
        from dl_on_flink.pytorch import PyTorchClusterConfig, train

        builder = PyTorchClusterConfig.new_builder().set_world_size(workers)
    else:
        from dl_on_flink.tensorflow import TFClusterConfig, train

        builder = TFClusterConfig.new_builder().set_worker_count(workers).set_ps_count(ps)
        if ps:
            builder = builder.set_is_worker_zero_chief(True)
    for key, value in properties.items():
        if key not in _RESERVED and value is not None:
            builder = builder.set_property(key, value)
    if address_book is not None:
        builder = builder.set_address_book(address_book)
    from dl_on_flink.errors import ConfigError

    try:
        config = builder.set_node_entry(entry).set_max_failover(max_failover).build()
    except ConfigError as exc:
        raise DLJobError(f"{where}, node {node['name']!r}: {exc}") from None
    train(env, config, input=feed, max_epoch=epochs)
    print(f"[aiflow] {where}: training node {node['name']!r} on {workers} worker(s)"
          + (f" and {ps} ps" if ps else "") + f", {epochs} epoch(s)", flush=True)
    return env


class TrainerEntry:
    """The node entry: ``trainer(PyTorchContext(ctx) | TFContext(ctx))``; rank 0 / worker 0 saves what it returns.

    Runs in each node's child process (it travels there pickled with the cluster config).
    """

    def __init__(self, trainer: Any, framework: str, model: str | None, result_path: str) -> None:
        from aiflow_notebook.core.config import aiflow_home

        self.trainer, self.framework, self.model, self.result_path = trainer, framework, model, result_path
        # the submitting side's home: on a Flink cluster the node runs in a TaskManager, whose own
        # AIFLOW_HOME (if any) is not the job's
        self.home = str(aiflow_home())

    def __call__(self, ctx: Any) -> None:
        if self.framework == "pytorch":
            from dl_on_flink.pytorch import PyTorchContext

            framework_ctx = PyTorchContext(ctx)
        else:
            from dl_on_flink.tensorflow import TFContext

            framework_ctx = TFContext(ctx)
        trained, metrics = split_trained(self.trainer(framework_ctx))
        chief = ctx.get_node_type() == "worker" and ctx.get_index() == 0
        if chief and trained is not None:
            uri = save_model(as_model(trained), self.model or "unnamed", getattr(self, "home", None))
            # atomic: a later attempt's model replaces an earlier one whole
            write_atomic(self.result_path, json.dumps({"uri": uri, "metrics": metrics}))


def as_model(trained: Any) -> Any:
    """What is saved for a trained object: a torch module (DDP unwrapped) becomes a ``TorchModel``."""
    try:
        import torch
    except ImportError:  # a tensorflow-only installation
        return trained
    if isinstance(trained, torch.nn.parallel.DistributedDataParallel):
        trained = trained.module
    if isinstance(trained, torch.nn.Module) and not hasattr(trained, "predict"):
        return TorchModel(trained)
    return trained


class TypedRows:
    """Parsed dataset rows (lists, or dicts for JSON) → PyFlink ``Row``s of the dataset's schema types."""

    def __init__(self, names: list[str], types: list[str]) -> None:
        self.names, self.types = names, types

    def __call__(self, row: Any) -> Any:
        from pyflink.common import Row

        if isinstance(row, dict):
            values = [row.get(name) for name in self.names]
        elif isinstance(row, list | tuple):
            values = list(row)
        else:
            values = [row]
        values = (values + [None] * len(self.types))[: len(self.types)]
        return Row(*[_coerce(v, t) for v, t in zip(values, self.types, strict=True)])


def _coerce(value: Any, kind: str) -> Any:
    if value is None or (value == "" and kind != "STRING"):
        return None
    if kind.startswith("ARRAY<"):
        items = json.loads(value) if isinstance(value, str) else value
        number = float if kind in ("ARRAY<FLOAT>", "ARRAY<DOUBLE>") else int
        return [number(v) for v in items]
    if kind in ("INT", "BIGINT"):
        return int(value) if not isinstance(value, str) else int(float(value))
    if kind in ("FLOAT", "DOUBLE"):
        return float(value)
    if kind == "BYTES":
        return value.encode() if isinstance(value, str) else bytes(value)
    return str(value)


def _where(spec: dict[str, Any], framework: str) -> str:
    """How errors and the log name the job: ``job WORKFLOW.JOB (engine pytorch)``."""
    return f"job {program_name(spec)} (engine {framework})"


def _train_node(job: dict[str, Any], where: str) -> dict[str, Any]:
    trains = [n for n in job["nodes"] if n["kind"] == "train"]
    if len(trains) != 1:
        found = ", ".join(repr(n["name"]) for n in trains) or "none"
        raise DLJobError(f"{where} needs exactly one af.train(input, trainer=fn, model=...) node (found {found}); "
                         "the trainer runs on every worker")
    node = trains[0]
    readers = {src for src, _ in node.get("inputs") or []}
    for other in job["nodes"]:
        if other is node or (other["kind"] == "read_dataset" and other["name"] in readers):
            continue
        raise DLJobError(f"{where}, node {other['name']!r} ({other['kind']}): a {job['engine']} job holds only "
                         "af.train and the af.read_dataset nodes it reads; put other steps in a python or flink job")
    return node


def _input_stream(env, spec: dict[str, Any], job: dict[str, Any], node: dict[str, Any], callables: dict, where: str):
    """The rows the workers are fed: a Table read by Flink's own CSV reader when every input is a CSV
    dataset of numbers and strings read without a function (a bounded job): typed in Java, so the rows
    reach the workers as Arrow batches without per-row Python work; else a DataStream of rows parsed
    and typed in Python."""
    from aiflow_notebook.engines.flink_program import read_dataset_stream

    inputs = node.get("inputs") or []
    if not inputs:
        return None
    by_name = {n["name"]: n for n in job["nodes"]}
    readers, typed_as = [by_name[source_name] for source_name, _index in inputs], None
    for reader in readers:
        schema = _flink_schema(reader, where)
        if typed_as is not None and schema != typed_as:
            raise DLJobError(f"{where}, node {node['name']!r}: its inputs have different schemas "
                             f"({typed_as[0]} vs {schema[0]}); train on one dataset")
        typed_as = schema
    if not job.get("streaming") and all(_java_csv(reader, callables, typed_as) for reader in readers):
        return _csv_table(env, readers, typed_as, job["name"], spec.get("cwd") or ".")
    streams = []
    for reader in readers:
        source_name = reader["name"]
        rows = read_dataset_stream(env, reader, job["name"], callables.get(source_name),
                                   streaming=bool(job.get("streaming")), base_dir=spec.get("cwd") or ".")
        streams.append(rows)
    names, types = typed_as
    from dl_on_flink.framework.codec import Schema

    row_type = Schema(list(zip(names, types, strict=True))).to_flink()
    stream = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
    return stream.map(TypedRows(names, types), output_type=row_type).name(f"{node['name']}: typed rows")


_CSV_TYPES = {"BIGINT": "BIGINT", "DOUBLE": "DOUBLE", "STRING": "STRING"}  # what Flink's CSV format parses as we do


def _java_csv(reader: dict[str, Any], callables: dict, schema: tuple[list[str], list[str]]) -> bool:
    uri = str((reader.get("dataset") or {}).get("uri") or "")
    return (callables.get(reader["name"]) is None and bool(uri) and not uri.endswith((".json", ".jsonl"))
            and all(t in _CSV_TYPES for t in schema[1]))


def _csv_table(env, readers: list[dict[str, Any]], schema: tuple[list[str], list[str]], job_name: str,
               base_dir: str):
    """The datasets as one Table of the schema's columns, parsed by Flink's CSV format (a value that does not
    parse is null, as ``part_files.parse_line`` makes it None)."""
    from pyflink.table import DataTypes, FormatDescriptor, Schema, StreamTableEnvironment, TableDescriptor

    from aiflow_notebook.engines.flink_program import FlinkProgramError, dataset_path

    t_env = StreamTableEnvironment.create(env)
    builder = Schema.new_builder()
    for name, kind in zip(*schema, strict=True):
        builder.column(name, getattr(DataTypes, kind)())
    tables = []
    for reader in readers:
        dataset = reader.get("dataset") or {}
        path = dataset_path(dataset["uri"], base_dir)
        if not path.exists():
            raise FlinkProgramError(f"job {job_name!r}, node {reader['name']!r}: dataset {dataset.get('name')!r} has "
                                    f"no data at {path} (was it written by an upstream job?)")
        csv = FormatDescriptor.for_format("csv").option("ignore-parse-errors", "true").build()
        tables.append(t_env.from_descriptor(TableDescriptor.for_connector("filesystem").schema(builder.build())
                                            .option("path", str(path)).format(csv).build()))
    table = tables[0]
    for other in tables[1:]:
        table = table.union_all(other)
    return table


def _flink_schema(reader: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    dataset = reader.get("dataset") or {}
    schema = dataset.get("schema")
    if not isinstance(schema, dict) or not schema:
        raise DLJobError(f"{where}, node {reader['name']!r}: dataset {dataset.get('name')!r} needs a schema "
                         "(schema={'x': 'float', 'y': 'float'}) so its rows can be typed for the workers")
    from dl_on_flink.framework.codec import FieldType

    names, types = [], []
    for name, kind in schema.items():
        text = str(kind).strip()
        mapped = _SCHEMA_TYPES.get(text.lower())
        if mapped is None:
            try:
                mapped = FieldType(text.upper().replace(" ", "")).value
            except ValueError:
                valid = ", ".join([*_SCHEMA_TYPES, *(t.value for t in FieldType)])
                raise DLJobError(f"{where}, node {reader['name']!r}: field {name!r} has type {kind!r}, which cannot "
                                 f"be fed to the workers (valid: {valid})") from None
        names.append(str(name))
        types.append(mapped)
    return names, types


def _int_property(properties: dict[str, Any], key: str, default: int, where: str) -> int:
    value = properties.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DLJobError(f"{where}: job property {key!r} must be an integer, got {value!r}") from None


def _run_dir(spec: dict[str, Any]) -> Path:
    """A directory of this job run (next to its spec file), where the chief writes the model's URI."""
    if spec.get("spec_path"):
        spec_path = Path(spec["spec_path"])
        path = spec_path.parent / f"{spec_path.name.removesuffix('.spec.json')}.dl"
    else:
        path = Path(tempfile.mkdtemp(prefix="aiflow-dl-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _training_failed(exc: Exception, where: str, node: str) -> DLJobError:
    """A short error from the Flink job's failure: the dl_on_flink cluster's verdict (node, attempt) and the
    tail of the failed node's output. The full text goes to the log first."""
    text = str(exc)
    print(text[-20_000:], flush=True)
    start = text.find("dl_on_flink cluster ")
    if start < 0:
        last = [line for line in text.splitlines() if line.strip()][-1:] or [type(exc).__name__]
        return DLJobError(f"{where}, node {node!r}: the Flink job failed: {last[0].strip()} (full error in the log)")
    verdict = text[start:]
    end = re.search(r"\n\s*(at [\w$.]+\(|Caused by:|\tat )", verdict)
    verdict = verdict[: end.start()] if end else verdict
    lines = [line for line in verdict.splitlines() if line.strip()]
    head, tail = lines[0], lines[1:][-ERROR_TAIL_LINES:]
    return DLJobError("\n".join([f"{where}, node {node!r}: training failed: {head}", *tail]))
