"""aiflow-notebook: event-driven ML workflows on Flink, from Jupyter.

``import aiflow_notebook as af`` gives the notebook SDK (DESIGN §4.1). Importing it is cheap: no IPython,
Flink or deep-learning framework is imported here. The layers below it are folders (docs/architecture.md):
``core``, ``storage``, ``events``, ``meta``, ``sdk``, ``engines``, ``scheduler``, ``session``, ``cli``.
"""

from aiflow_notebook import _moved
from aiflow_notebook.core.errors import (
    AIFlowError,
    CaptureError,
    ConfigurationError,
    CrossJobDataEdgeError,
    CycleError,
    DuplicateNodeError,
    EngineConflictError,
    GraphError,
    InvalidArgumentError,
    MissingNodeError,
    UnknownEngineError,
    UnknownJobError,
    UnknownWorkflowError,
    WorkflowFormatError,
)
from aiflow_notebook.core.version import __version__
from aiflow_notebook.sdk.compile import compile
from aiflow_notebook.sdk.conditions import (
    EQUALS,
    ONCE,
    REPEATED,
    UPDATED,
    Condition,
    ConditionContext,
    EventCondition,
    EventLife,
    MeetAll,
    MeetAny,
    ValueCondition,
    ValueState,
    ValueStateDescriptor,
)
from aiflow_notebook.sdk.control import (
    NONE,
    RESTART,
    START,
    STOP,
    SWAP,
    Action,
    ControlEdge,
    action_on_condition,
    action_on_event,
    action_on_events,
    action_on_job_status,
    action_on_model_version_event,
)
from aiflow_notebook.sdk.graph import (
    AIGraph,
    Channel,
    DatasetSpec,
    engine,
    global_config,
    job_config,
    workflow,
)
from aiflow_notebook.sdk.ops import (
    evaluate,
    model_validate,
    predict,
    push_model,
    read_dataset,
    train,
    transform,
    user_define_operation,
    write_dataset,
)
from aiflow_notebook.sdk.workflow import Job, NodeSpec, Workflow
from aiflow_notebook.session.submit import connect, connected, disconnect, save_model, submit

_moved.install()  # old module paths (saved workflows, users' imports) keep working for one release


# The metadata layer (SQLAlchemy, Alembic, graphviz) costs ~0.5 s to import: load it on first use, so that
# `import aiflow_notebook` and every job process start fast.
_LAZY = {
    "MetadataStore": "aiflow_notebook.meta",
    "ModelVersion": "aiflow_notebook.meta",
    "Stage": "aiflow_notebook.meta",
    "default_store": "aiflow_notebook.meta",
    "get_latest_model_version": "aiflow_notebook.session.models",
    "get_model_version": "aiflow_notebook.session.models",
    "lineage": "aiflow_notebook.session.models",
    "list_model_versions": "aiflow_notebook.session.models",
    "register_model": "aiflow_notebook.session.models",
    "register_model_version": "aiflow_notebook.session.models",
    "metric_at_least": "aiflow_notebook.engines.model_gate",
    "read_rows": "aiflow_notebook.storage.part_files",
    "wait_until": "aiflow_notebook.core.waiting",
    "HopelessWaitError": "aiflow_notebook.core.waiting",
    "load_model": "aiflow_notebook.engines.model_io",
    "update_model_version": "aiflow_notebook.session.models",
    "add_workflow_schedule": "aiflow_notebook.session.schedules",
    "list_workflow_schedules": "aiflow_notebook.session.schedules",
    "pause_workflow_schedule": "aiflow_notebook.session.schedules",
    "resume_workflow_schedule": "aiflow_notebook.session.schedules",
    "delete_workflow_schedule": "aiflow_notebook.session.schedules",
    "add_workflow_trigger": "aiflow_notebook.session.schedules",
    "list_workflow_triggers": "aiflow_notebook.session.schedules",
    "delete_workflow_trigger": "aiflow_notebook.session.schedules",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aiflow_notebook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "EQUALS",
    "NONE",
    "ONCE",
    "REPEATED",
    "RESTART",
    "START",
    "STOP",
    "SWAP",
    "UPDATED",
    "AIFlowError",
    "AIGraph",
    "Action",
    "CaptureError",
    "Condition",
    "ConditionContext",
    "Channel",
    "ConfigurationError",
    "ControlEdge",
    "CrossJobDataEdgeError",
    "CycleError",
    "DatasetSpec",
    "DuplicateNodeError",
    "EngineConflictError",
    "EventCondition",
    "EventLife",
    "GraphError",
    "HopelessWaitError",
    "InvalidArgumentError",
    "Job",
    "MeetAll",
    "MeetAny",
    "MetadataStore",
    "MissingNodeError",
    "ModelVersion",
    "NodeSpec",
    "Stage",
    "UnknownEngineError",
    "UnknownJobError",
    "UnknownWorkflowError",
    "ValueCondition",
    "ValueState",
    "ValueStateDescriptor",
    "Workflow",
    "WorkflowFormatError",
    "__version__",
    "action_on_condition",
    "action_on_event",
    "action_on_events",
    "add_workflow_schedule",
    "add_workflow_trigger",
    "delete_workflow_schedule",
    "delete_workflow_trigger",
    "list_workflow_schedules",
    "list_workflow_triggers",
    "pause_workflow_schedule",
    "resume_workflow_schedule",
    "action_on_job_status",
    "action_on_model_version_event",
    "compile",
    "connect",
    "connected",
    "default_store",
    "disconnect",
    "engine",
    "evaluate",
    "get_latest_model_version",
    "get_model_version",
    "global_config",
    "job_config",
    "lineage",
    "list_model_versions",
    "load_model",
    "metric_at_least",
    "model_validate",
    "predict",
    "push_model",
    "read_dataset",
    "read_rows",
    "register_model",
    "register_model_version",
    "save_model",
    "submit",
    "train",
    "transform",
    "update_model_version",
    "user_define_operation",
    "wait_until",
    "workflow",
    "write_dataset",
]
