"""The words every layer shares: job and run states, event type names, namespaces, the scheduler's commands,
the run context of an event, the wildcard. Defined here once.

Why a module of its own, at the bottom of the import graph: the graph layer (``af.action_on_job_status``
validates a status), the event bus (filters), the metadata store (a job run's end, model stages), the
scheduler (rules, run status) and the notebook front end all speak these words, and none of them may import
the others to learn them (DESIGN §3). This module imports nothing of ours and nothing heavy, so any layer
can import it without cost — ``events.event`` cannot play that part: importing it imports the events
package, hence ZeroMQ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

WILDCARD = "*"
"""In a filter or a rule's event condition: any value. An event's own fields may never be the wildcard."""


def matches(pattern: str | None, actual: str | None) -> bool:
    """Whether one field of a filter or condition selects ``actual``: equal, or the pattern is the wildcard."""
    return pattern == WILDCARD or pattern == actual


# --- job and workflow run states ------------------------------------------------------------------------

class JobState(StrEnum):
    """The values of a ``JOB_STATUS_CHANGED`` event, in the order a job passes through them."""

    INIT = "INIT"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class RunState(StrEnum):
    """The values of a ``WORKFLOW_RUN_STATUS_CHANGED`` event: a workflow run is running, then final."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


JOB_STATES = tuple(JobState)
"""Every job state, in the order a job passes through them."""
ACTIVE_STATES = (JobState.STARTING, JobState.RUNNING)
"""A job run in one of these has (or is about to have) a process."""
FINAL_STATES = (JobState.FINISHED, JobState.FAILED, JobState.KILLED)
"""Final states of a job run and of a workflow run: nothing follows them."""


# --- model version stages --------------------------------------------------------------------------------

class Stage(StrEnum):
    """Lifecycle stages of a model version (which may follow which: ``meta.models.ALLOWED_TRANSITIONS``)."""

    GENERATED = "GENERATED"
    VALIDATED = "VALIDATED"
    DEPLOYED = "DEPLOYED"
    DEPRECATED = "DEPRECATED"
    DELETED = "DELETED"


# --- event types ------------------------------------------------------------------------------------------

JOB_STATUS_CHANGED = "JOB_STATUS_CHANGED"
"""Key ``<workflow>.<job>``, value one of :data:`JOB_STATES`; published by the scheduler."""
RUN_STATUS_CHANGED = "WORKFLOW_RUN_STATUS_CHANGED"
"""Key ``<workflow>``, value ``RUNNING`` or one of :data:`FINAL_STATES`; published by the scheduler."""
JOB_PROGRESS = "JOB_PROGRESS"
"""Key ``<workflow>.<job>``, value a fraction ``0``..``1``, context ``{"run": RUN_ID}``: sent by a job that knows
how far it is (``$AIFLOW_RUN_ID`` names its run); the run panels draw it as a progress bar."""
JOB_STOP_FAILED = "JOB_STOP_FAILED"
"""Key ``<workflow>.<job>``, value the error: the scheduler could not stop the job's process."""
DATASET_UPDATED = "DATASET_UPDATED"
"""Key the dataset's name, value its URI; published when a job that wrote it finished."""
MODEL_EVENT_PREFIX = "MODEL_"


def model_event_type(stage: Stage | str) -> str:
    """The event type published when a model version enters ``stage``: ``MODEL_<STAGE>``."""
    return f"{MODEL_EVENT_PREFIX}{Stage(stage).value}"


MODEL_EVENT_TYPES = tuple(model_event_type(stage) for stage in Stage)
"""``MODEL_GENERATED`` … ``MODEL_DELETED``: key the model's name, value the version (as JSON)."""

# A model swapped inside a running job (action SWAP). Key ``<workflow>.<job>``, value JSON ``{"model": M,
# "version": V}`` (+ ``"error"``, ``"instance"``), context the run and the job run (``{"run": R, "job_run": J}``).
MODEL_SWAP_REQUESTED = "MODEL_SWAP_REQUESTED"
"""From the scheduler: a SWAP rule fired for the running job; every instance of it loads version V."""
MODEL_SWAP_LOADED = "MODEL_SWAP_LOADED"
"""From one instance (``"instance": i`` of ``"instances": n``) of the job: it now scores with version V."""
MODEL_SWAPPED = "MODEL_SWAPPED"
"""From the job, once: every instance scores with version V (what the panels show as the served version)."""
MODEL_SWAP_FAILED = "MODEL_SWAP_FAILED"
"""From an instance that could not load version V (``"error"``): it goes on scoring with the version it had."""


# --- namespaces and the scheduler's commands -----------------------------------------------------------------

DEFAULT_NAMESPACE = "default"
"""The namespace of an event that names none, and of every status event the scheduler publishes."""
CONTROL_NAMESPACE = "aiflow"
"""The namespace of the scheduler's commands and replies (key ``scheduler.<name>``, see :func:`command_key`)."""
SUBMIT_WORKFLOW = "SUBMIT_WORKFLOW"
STOP_WORKFLOW_RUN = "STOP_WORKFLOW_RUN"
RESTART_JOB = "RESTART_JOB"
SCHEDULE_COMMAND = "SCHEDULE_COMMAND"
"""Commands to a scheduler (event types in :data:`CONTROL_NAMESPACE`); value a JSON request."""
RUN_CREATED = "WORKFLOW_RUN_CREATED"
SUBMIT_REJECTED = "WORKFLOW_SUBMIT_REJECTED"
SCHEDULE_REPLY = "SCHEDULE_REPLY"
"""The scheduler's replies; their context names the request they answer (``{"request_id": ...}``)."""
SCHEDULER_SENDER = "scheduler"
"""The sender of every event a scheduler publishes (status events, replies): a reply from another sender is
not the scheduler's word."""
DEFAULT_SCHEDULER = "default"
"""The name of a scheduler that is given none (a process may run several, each with its command key)."""
DEFAULT_PROJECT = "default"
"""The project of a workflow that names none (runs, the sidebar's grouping, the metadata store)."""


def command_key(scheduler: str) -> str:
    """The key of the commands to (and replies from) the scheduler named ``scheduler``."""
    return f"scheduler.{scheduler}"


# --- the run an event belongs to ------------------------------------------------------------------------------

RUN_FIELD = "run"
"""The field of an event's JSON context that names the workflow run it belongs to (an integer id)."""


def run_context(run_id: int, **fields: Any) -> dict[str, Any]:
    """The context of an event of run ``run_id`` (``{"run": 7, ...fields}``), to be sent as JSON."""
    return {RUN_FIELD: int(run_id), **fields}


def run_in_context(context: str | Mapping[str, Any] | None) -> int | None:
    """The run an event's context names, or None: no context, not a JSON object, or no integer run id (a
    context of the sender's own format is left alone, and the event is global)."""
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except ValueError:
            return None
    if not isinstance(context, Mapping):
        return None
    run = context.get(RUN_FIELD)
    return run if isinstance(run, int) and not isinstance(run, bool) else None
