"""Where the scheduler keeps a job run's files under its home: one place that says it, for the launch that
writes them, the recovery that looks for them and the settling that prunes savepoints.

- ``runs/<run>/<job>-<job run>.spec.json``, ``.log``, ``.status.json`` (written by the launcher when the
  process ends), ``.outcome.json`` (what the job reported on its way out);
- ``savepoints/<workflow>/<run>/<job>/``: a job's savepoints, never shared by two live runs.
"""

from __future__ import annotations

from pathlib import Path


class Paths:
    def __init__(self, home: Path):
        self.home = home

    def job_run(self, run_id: int, job: str, job_run_id: int) -> Path:
        """The stem of a job run's files (add ``.spec.json``, ``.log``, ``.status.json``, ``.outcome.json``)."""
        return self.home / "runs" / str(run_id) / f"{job}-{job_run_id}"

    def savepoints(self, workflow: str, run_id: int, job: str) -> Path:
        """Where a job of a run puts its savepoints: its own, never shared by two live runs."""
        return self.home / "savepoints" / workflow / str(run_id) / job
