"""The node functions: ``af.read_dataset``, ``af.transform``, ``af.train``... (DESIGN §4.1).

Each records one node in the current job of the current workflow and returns its output channel(s);
passing a channel to another node function makes a data edge. User functions are stored, not called:
they run later, in a job, on the job's engine.

Naming: a node is called ``name=`` when given, else after what it does (``read_clicks``, ``featurize``,
``train_ctr``...), with ``_2``, ``_3`` added when the job already has one of that name. Defining a node
with an explicit name again in a later block replaces the old one (as re-running a cell redefines a
function); twice in one block is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import aiflow_notebook.sdk.graph as _graph
from aiflow_notebook.core.errors import InvalidArgumentError
from aiflow_notebook.core.vocabulary import Stage
from aiflow_notebook.sdk.graph import Channel, DatasetSpec, Node

Inputs = Channel | Sequence[Channel] | None
Outputs = Channel | tuple[Channel, ...]


def read_dataset(name_or_meta: str | Any, uri: str | None = None, schema: Any = None, *,
                 fn: Callable[..., Any] | None = None, name: str | None = None) -> Channel:
    """Read a dataset. By name alone (``af.read_dataset("features")``) it is the dataset that another job
    writes with ``af.write_dataset``, or one registered in the metadata store. ``fn(dataset)``, when
    given, does the reading."""
    dataset = _dataset(name_or_meta, uri, schema, "read_dataset")
    return _add("read_dataset", name, f"read_{dataset.name}", fn=fn, dataset=dataset, output_num=1)


def write_dataset(input: Channel, name_or_meta: str | Any, uri: str | None = None, *, schema: Any = None,
                  fn: Callable[..., Any] | None = None, name: str | None = None) -> Channel:
    """Write the data of ``input`` as dataset ``name_or_meta``; other jobs read it by name.
    ``fn(data, dataset)``, when given, does the writing. Returns a channel without output."""
    dataset = _dataset(name_or_meta, uri, schema, "write_dataset")
    return _add("write_dataset", name, f"write_{dataset.name}", fn=fn, inputs=input, dataset=dataset,
                output_num=0)


def transform(input_or_list: Inputs, fn: Callable[..., Any], name: str | None = None,
              output_num: int = 1, *, group_by: int | str | None = None) -> Outputs:
    """``fn(*inputs)``: feature engineering, cleaning... Returns ``output_num`` channels.

    ``group_by=K`` (a column index, or a key of dict rows; flink batch jobs): ``fn(rows)`` is called once per
    key with all the rows of that key and returns the rows to emit — per-key aggregates joined back to
    each row (a user's click-through rate on each of their impressions)."""
    if group_by is not None and (isinstance(group_by, bool) or not isinstance(group_by, int | str)):
        raise InvalidArgumentError(f"transform {name or _fn_name(fn, 'transform')!r}: group_by must be a column "
                                   f"index or a key name, got {group_by!r}")
    return _add("transform", name, _fn_name(fn, "transform"), fn=fn, inputs=input_or_list,
                output_num=output_num, fn_required=True,
                properties=None if group_by is None else {"group_by": group_by})


def train(input: Inputs, trainer: Callable[..., Any], model: str | Any, name: str | None = None) -> Channel:
    """``trainer(*inputs)`` trains model ``model``; its return value is the output channel."""
    model_name = _model(model, "train")
    return _add("train", name, f"train_{model_name}", fn=trainer, inputs=input, model=model_name,
                output_num=1, fn_required=True)


def evaluate(input: Inputs, model: str | Any, evaluator: Callable[..., Any] | None = None,
             name: str | None = None) -> Channel:
    """``evaluator(*inputs)`` evaluates model ``model`` (e.g. returns its metrics)."""
    model_name = _model(model, "evaluate")
    return _add("evaluate", name, f"evaluate_{model_name}", fn=evaluator, inputs=input, model=model_name,
                output_num=1)


def model_validate(input: Inputs, model: str | Any, validator: Callable[..., Any] | None = None,
                   version: str | int | None = None, name: str | None = None) -> Channel:
    """``validator(*inputs)`` decides whether a version of ``model`` is good enough to serve."""
    model_name = _model(model, "model_validate")
    return _add("model_validate", name, f"validate_{model_name}", fn=validator, inputs=input,
                model=model_name, model_version=version, output_num=1)


def predict(input: Inputs, model: str | Any, version: str | int | None = None, stage: str | None = None, *,
            predictor: Callable[..., Any] | None = None, name: str | None = None,
            with_version: bool = False) -> Channel:
    """Predict with a version of ``model``; ``predictor(*inputs)`` when given, else the engine's built-in
    prediction. Which version the built-in serves, decided when the job starts:

    - ``version=N``: exactly that version (``stage=`` too: it must be in that stage);
    - a job started or restarted by ``action_on_model_version_event``: the version the triggering
      ``MODEL_*`` event names (when it is in ``stage``, if given);
    - ``stage="DEPLOYED"`` (any stage): the newest version in that stage;
    - neither: the newest VALIDATED or DEPLOYED version, else the newest GENERATED one (noted in the job log).

    ``with_version=True`` appends the served version's number to each output row, so that a stream's
    scores say which model version made them (the built-in prediction only).
    """
    model_name = _model(model, "predict")
    if version is not None and (isinstance(version, bool) or not str(version).isdigit() or int(version) < 1):
        raise InvalidArgumentError(f"predict of model {model_name!r}: version must be a version number "
                                   f"(1, 2, ...), got {version!r}")
    return _add("predict", name, f"predict_{model_name}", fn=predictor, inputs=input, model=model_name,
                model_version=version, model_stage=_model_stage(stage, model_name), output_num=1,
                properties={"with_version": True} if with_version else None)


def push_model(model: str | Any, pusher: Callable[..., Any] | None = None, version: str | int | None = None,
               name: str | None = None, *, input: Inputs = None) -> Channel:
    """Push a version of ``model`` to where it is served (``pusher``). Returns a channel without output."""
    model_name = _model(model, "push_model")
    return _add("push_model", name, f"push_{model_name}", fn=pusher, inputs=input, model=model_name,
                model_version=version, output_num=0)


def user_define_operation(fn: Callable[..., Any], inputs: Inputs = None, name: str | None = None,
                          output_num: int = 1, properties: dict[str, Any] | None = None) -> Outputs:
    """Any other operation: ``fn(*inputs)`` with ``output_num`` outputs (0 for none)."""
    return _add("user_define_operation", name, _fn_name(fn, "operation"), fn=fn, inputs=inputs,
                output_num=output_num, properties=properties, fn_required=True)


# ---------------------------------------------------------------------------------------------------------


def _add(kind: str, name: str | None, default_name: str, *, fn: Callable[..., Any] | None = None,
         inputs: Inputs = None, output_num: int = 1, dataset: DatasetSpec | None = None, model: str | None = None,
         model_version: str | int | None = None, model_stage: str | None = None,
         properties: dict[str, Any] | None = None, fn_required: bool = False) -> Outputs:
    graph = _graph.current_graph()
    job_name, generation = _graph.current_job_frame()
    job = _graph.ensure_job(graph, job_name)
    what = f"{kind} {name or default_name!r} in job {job.name!r}"
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidArgumentError(f"{kind} in job {job.name!r}: name must be a non-empty string, got {name!r}")
    if fn_required and fn is None:
        raise InvalidArgumentError(f"{what}: needs a function to run")
    if fn is not None and not callable(fn):
        raise InvalidArgumentError(f"{what}: expected a function, got {type(fn).__name__} {fn!r}")
    if isinstance(output_num, bool) or not isinstance(output_num, int) or output_num < 0:
        raise InvalidArgumentError(f"{what}: output_num must be an integer >= 0, got {output_num!r}")
    if properties is not None and not isinstance(properties, dict):
        raise InvalidArgumentError(f"{what}: properties must be a dict, got {properties!r}")
    channels = _channels(inputs, graph.name, what)
    node = Node(kind=kind, name=name or graph.unique_name(job.name, default_name), job=job.name,
                engine=_graph.node_engine(job), fn=fn, inputs=channels, output_num=output_num, dataset=dataset,
                model=model, model_version=None if model_version is None else str(model_version), model_stage=model_stage,
                properties=dict(properties or {}), location=_graph.caller_location(),
                origin=_graph.current_origin(), seq=_graph.next_seq(), generation=generation)
    graph.add_node(node)
    outputs = tuple(Channel(graph.name, node.job, node.name, i) for i in range(output_num))
    if output_num == 0:
        return Channel(graph.name, node.job, node.name, -1)
    return outputs[0] if output_num == 1 else outputs


def _channels(inputs: Inputs, workflow: str, what: str) -> tuple[Channel, ...]:
    if inputs is None:
        return ()
    items = [inputs] if isinstance(inputs, Channel) else inputs
    if not isinstance(items, list | tuple):
        raise InvalidArgumentError(f"{what}: input must be a channel returned by another node (or a list of "
                                   f"them), got {type(inputs).__name__}")
    for channel in items:
        if not isinstance(channel, Channel):
            raise InvalidArgumentError(f"{what}: input must be a channel returned by another node (or a list "
                                       f"of them), got {type(channel).__name__} {_short(channel)}")
        if channel.workflow != workflow:
            raise InvalidArgumentError(f"{what}: input {channel!r} belongs to workflow {channel.workflow!r}, "
                                       f"not {workflow!r}; data edges stay inside one workflow")
        if channel.index < 0:
            raise InvalidArgumentError(f"{what}: node {channel.node!r} in job {channel.job!r} has no output "
                                       f"to read (it is a write_dataset or push_model)")
    return tuple(items)


def _dataset(name_or_meta: Any, uri: str | None, schema: Any, where: str) -> DatasetSpec:
    if isinstance(name_or_meta, str):
        spec = DatasetSpec(name_or_meta, uri, schema)
    elif isinstance(getattr(name_or_meta, "name", None), str):  # DatasetSpec or meta.Dataset
        spec = DatasetSpec(name_or_meta.name, uri if uri is not None else getattr(name_or_meta, "uri", None),
                           schema if schema is not None else getattr(name_or_meta, "schema", None))
    else:
        raise InvalidArgumentError(f"{where}: expected a dataset name (or a dataset from the metadata store), "
                                   f"got {type(name_or_meta).__name__} {_short(name_or_meta)}")
    if not spec.name.strip():
        raise InvalidArgumentError(f"{where}: the dataset name is empty")
    if spec.uri is not None and not isinstance(spec.uri, str):
        raise InvalidArgumentError(f"{where}({spec.name!r}): uri must be a string, got {spec.uri!r}")
    try:
        if spec.schema is not None:
            json.dumps(spec.schema)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{where}({spec.name!r}): the schema must be plain data (a list of column names, or a dict of "
            f"column name to type name), got {type(spec.schema).__name__}") from None
    return spec


def _model(model: Any, where: str) -> str:
    if isinstance(model, str) and model:
        return model
    if isinstance(getattr(model, "name", None), str):  # meta.Model
        return model.name
    raise InvalidArgumentError(f"{where}: model must be a model name, got {_short(model)}")


def _model_stage(stage: Any, model: str) -> str | None:
    """The stage name, upper-cased and checked here, so a typo fails in the cell and not in the job."""
    if stage is None:
        return None
    stages = [member.value for member in Stage]
    name = str(getattr(stage, "value", stage)).upper()
    if name not in stages:
        raise InvalidArgumentError(f"predict of model {model!r}: stage {stage!r} is not one of {', '.join(stages)}")
    return name


def _fn_name(fn: Any, fallback: str) -> str:
    name = getattr(fn, "__name__", "")
    return name if name and name != "<lambda>" else fallback


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
