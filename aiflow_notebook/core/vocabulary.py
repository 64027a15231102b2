"""The words every layer shares: job and run states, event type names, the wildcard. Defined here once.

Why a module of its own, at the bottom of the import graph: the graph layer (``af.action_on_job_status``
validates a status), the event bus (filters), the metadata store (a job run's end, model stages), the
scheduler (rules, run status) and the notebook front end all speak these words, and none of them may import
the others to learn them (DESIGN §3). This module imports nothing of ours and nothing heavy, so any layer
can import it without cost — ``events.event`` cannot play that part: importing it imports the events
package, hence ZeroMQ.
"""

from __future__ import annotations

from enum import StrEnum

WILDCARD = "*"
"""In a filter or a rule's event condition: any value. An event's own fields may never be the wildcard."""


def matches(pattern: str | None, actual: str | None) -> bool:
    """Whether one field of a filter or condition selects ``actual``: equal, or the pattern is the wildcard."""
    return pattern == WILDCARD or pattern == actual


# --- job and workflow run states ------------------------------------------------------------------------

JOB_STATES = ("INIT", "STARTING", "RUNNING", "FINISHED", "FAILED", "KILLED")
"""The values of a ``JOB_STATUS_CHANGED`` event, in the order a job passes through them."""
ACTIVE_STATES = ("STARTING", "RUNNING")
"""A job run in one of these has (or is about to have) a process."""
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")
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
