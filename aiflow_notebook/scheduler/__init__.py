"""The event-driven scheduler (DESIGN §4.4): embedded in the kernel, or a remote ``aiflow server``."""

from aiflow_notebook.scheduler.client import SchedulerClient, SchedulerError, WorkflowRun
from aiflow_notebook.scheduler.embedded import EmbeddedScheduler
from aiflow_notebook.scheduler.scheduler import Scheduler

__all__ = ["EmbeddedScheduler", "Scheduler", "SchedulerClient", "SchedulerError", "WorkflowRun"]
