"""``application/vnd.aiflow.workflow+json``: a workflow (or a run of it) as JSON for interactive renderers.

The contract is docs/workflow-mime.md; the JupyterLab extension draws it, and the notebook panels put it in
every workflow bundle beside SVG, PNG and text. Plain data only: the payloads never leave the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiflow_notebook.core.vocabulary import JobState

if TYPE_CHECKING:
    from aiflow_notebook.sdk.workflow import Workflow

MIME_TYPE = "application/vnd.aiflow.workflow+json"
FORMAT = 1


def workflow_json(workflow: Workflow, status: Mapping[str, str] | None = None, run_id: int | None = None,
                  run_status: str | None = None) -> dict[str, Any]:
    """The document of docs/workflow-mime.md; ``status`` maps job → state (None for a compiled workflow).
    A job the run has not started (``INIT``) has status null, as the contract says."""
    status = {job: state for job, state in (status or {}).items() if state != JobState.INIT}
    writers: dict[str, list[str]] = {}
    for job in workflow.jobs.values():
        for dataset in job.outputs:
            writers.setdefault(dataset.name, []).append(job.name)
    handoffs = [{"dataset": dataset.name, "from_job": writer, "to_job": job.name}
                for job in workflow.jobs.values() for dataset in job.inputs
                for writer in writers.get(dataset.name, ()) if writer != job.name]
    return {
        "format": FORMAT,
        "workflow": workflow.name,
        "project": workflow.project,
        "content_hash": workflow.content_hash,
        "run_id": run_id,
        "run_status": run_status,
        "jobs": [{
            "name": job.name, "engine": job.engine, "platform": job.platform, "parallelism": job.parallelism,
            "streaming": job.streaming, "status": status.get(job.name),
            "nodes": [{"name": node.name, "kind": node.kind, "inputs": [[source, index] for source, index in node.inputs],
                       "dataset": node.dataset.name if node.dataset else None, "model": node.model}
                      for node in job.nodes],
            "inputs": [dataset.name for dataset in job.inputs],
            "outputs": [dataset.name for dataset in job.outputs],
        } for job in workflow.jobs.values()],
        "datasets": handoffs,
        "control_edges": [{"job": edge.job, "action": edge.action.value, "upstream": edge.upstream,
                           "model": edge.model, "label": edge.label} for edge in workflow.control_edges],
    }
