"""The error hierarchy users catch: every failure we raise on purpose is an ``AIFlowError``.

Each subpackage defines its own subclasses next to the code that raises them (they all derive from
``AIFlowError``), so ``except af.AIFlowError`` catches everything the product reports, while
programming errors (bugs) stay ordinary Python exceptions. The errors about the shape of a workflow live
here too (``GraphError`` and its kinds): every message names the culprit (node, job, control edge, dataset,
the captured global) and, where we know it, the cell and line that created it, then says how to fix it; the
magics print them as one paragraph instead of a traceback.
"""

from __future__ import annotations


class AIFlowError(Exception):
    """Base of every error aiflow-notebook raises on purpose; the message says what and how to fix."""


class ConfigurationError(AIFlowError, ValueError):
    """A setting (environment variable, argument, URL) is malformed or inconsistent."""


# --- the shape of a workflow: what the user wrote, caught before anything runs --------------------------


class GraphError(AIFlowError):
    """The AI graph (nodes, data edges, execution blocks, control edges) is not a valid workflow."""


class InvalidArgumentError(GraphError, ValueError):
    """A node, block or control-edge function got an argument it cannot use (wrong type or unknown value)."""


class DuplicateNodeError(GraphError):
    """Two nodes with the same explicit name were defined in the same block of one job."""


class MissingNodeError(GraphError):
    """A node reads a channel whose node is no longer (or never was) part of the workflow."""


class CycleError(GraphError):
    """The data edges form a cycle; ``.nodes`` lists the nodes on it, in order."""

    def __init__(self, message: str, nodes: list[str]):
        super().__init__(message)
        self.nodes = nodes


class CrossJobDataEdgeError(GraphError):
    """A data edge goes from a node in one job straight to a node in another, without a dataset between."""


class EngineConflictError(GraphError):
    """The nodes of one job ask for two different engines."""


class UnknownEngineError(GraphError, ValueError):
    """A job or node names an engine that no runner is registered for."""


class UnknownJobError(GraphError, LookupError):
    """A control edge acts on (or listens to) a job that the workflow does not have."""


class UnknownWorkflowError(GraphError, LookupError):
    """``af.compile("name")`` named a workflow that was never defined in this session."""


class CaptureError(GraphError):
    """A node's function (or something it uses) cannot be pickled, so it could not run in another process."""


class WorkflowFormatError(AIFlowError, ValueError):
    """Bytes given to ``Workflow.from_bytes`` are not a serialized workflow of a version we can read."""
