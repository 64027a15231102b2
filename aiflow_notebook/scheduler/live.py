"""What the scheduler's loop knows in memory: its live runs, their workflows, the job processes it follows,
the runs being stopped and the last event it took.

Only the loop thread changes it (and the start-up, before the loop runs), and only after the database
committed what it reflects (see ``state``): a decision that could not be committed leaves no trace here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiflow_notebook.engines.process import JobProcess
from aiflow_notebook.scheduler.state import ActiveRun


@dataclass
class Running:
    """A job process the loop follows (one per live job run)."""

    run_id: int
    job: str
    job_run_id: int
    attempt: int
    process: JobProcess
    stop_requested: float | None = None  # when the stop began (time.monotonic())


class Live:
    """The live runs (``runs``), the followed processes by job run id (``running``), the runs being stopped
    (``stopping``) and the version of the last event the loop took (``last_seen``: a run a schedule starts
    sees the events after it)."""

    def __init__(self, store: Any):
        self._store = store  # the loop's (durable) metadata store: workflow snapshots
        self.runs: dict[int, ActiveRun] = {}
        self.running: dict[int, Running] = {}
        self.stopping: set[int] = set()
        self.last_seen = 0
        self._workflows: dict[int, Any] = {}  # run id -> its Workflow

    def add(self, run: ActiveRun, workflow: Any = None) -> None:
        """Take in a live run (with its workflow, when the caller has it already)."""
        self.runs[run.run_id] = run
        if workflow is not None:
            self._workflows[run.run_id] = workflow

    def workflow(self, run: ActiveRun) -> Any:
        """The run's workflow, read once from its snapshot."""
        if run.run_id not in self._workflows:
            from aiflow_notebook.sdk.workflow import Workflow

            self._workflows[run.run_id] = Workflow.from_bytes(self._store.get_workflow_snapshot(run.snapshot_id))
        return self._workflows[run.run_id]

    def job_property(self, run: ActiveRun, job: str, name: str) -> Any:
        found = self.workflow(run).jobs.get(job)
        return (found.properties or {}).get(name) if found is not None else None

    def processes(self, run_id: int, job: str | None = None) -> list[Running]:
        """The followed processes of a run (of one of its jobs)."""
        return [r for r in self.running.values() if r.run_id == run_id and job in (None, r.job)]
