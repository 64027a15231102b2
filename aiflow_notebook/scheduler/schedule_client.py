"""Asking a scheduler — embedded or remote — to add, list, pause, resume and delete schedules and triggers.

Like a submission, every request is an event (``SCHEDULE_COMMAND`` on the scheduler's command key) and
the answer is one too (``SCHEDULE_REPLY``, matched by request id); the workflow (and a trigger's
condition) travel as blobs of the scheduler's blob store, which it reads back hash-verified.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from aiflow_notebook.core.timing import Timing
from aiflow_notebook.core.vocabulary import CONTROL_NAMESPACE, SCHEDULE_COMMAND, SCHEDULE_REPLY, command_key
from aiflow_notebook.core.vocabulary import SCHEDULER_SENDER as SENDER
from aiflow_notebook.events import Event
from aiflow_notebook.scheduler.client import SchedulerClient, SchedulerError


class ScheduleClient:
    def __init__(self, scheduler: SchedulerClient):
        self.scheduler = scheduler

    def add_schedule(self, workflow: Any, timing: Timing, project: str | None = None,
                     timeout: float = 60.0) -> dict[str, Any]:
        """``workflow``: a compiled Workflow (uploaded) or the name of one already submitted to the scheduler."""
        return self.request("add_schedule", timeout, timing=timing.to_dict(), **self._workflow(workflow, project))

    def list_schedules(self, workflow: str | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
        return self.request("list_schedules", timeout, workflow=workflow)

    def pause_schedule(self, schedule_id: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.request("pause_schedule", timeout, id=int(schedule_id))

    def resume_schedule(self, schedule_id: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.request("resume_schedule", timeout, id=int(schedule_id))

    def delete_schedule(self, schedule_id: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.request("delete_schedule", timeout, id=int(schedule_id))

    def add_trigger(self, workflow: Any, condition: dict[str, Any], project: str | None = None,
                    timeout: float = 60.0) -> dict[str, Any]:
        """``condition``: the plain form of MeetAll / MeetAny / a custom condition (its pickle included)."""
        condition_uri = self.scheduler.blobs.put(json.dumps(condition).encode("utf-8"))
        return self.request("add_trigger", timeout, condition_uri=condition_uri, **self._workflow(workflow, project))

    def list_triggers(self, workflow: str | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
        return self.request("list_triggers", timeout, workflow=workflow)

    def delete_trigger(self, trigger_id: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.request("delete_trigger", timeout, id=int(trigger_id))

    # --- the protocol --------------------------------------------------------------------------------

    def request(self, op: str, timeout: float, **arguments: Any) -> Any:
        """Send one command and wait for its answer; the scheduler's refusal becomes a ``SchedulerError``."""
        client, name = self.scheduler.client, self.scheduler.name
        request_id = uuid.uuid4().hex
        sent = client.send_event(Event(key=command_key(name), event_type=SCHEDULE_COMMAND, namespace=CONTROL_NAMESPACE,
                                       sender=client.client_id,
                                       value=json.dumps({"op": op, "request_id": request_id, **arguments})))
        since, deadline = sent.version, time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in client.list_events(key=command_key(name), namespace=CONTROL_NAMESPACE,
                                            event_type=SCHEDULE_REPLY, since_version=since):
                since = max(since, event.version)
                if event.sender == SENDER and event.context and \
                        json.loads(event.context).get("request_id") == request_id:  # the scheduler's word only
                    answer = json.loads(event.value)
                    if "error" in answer:
                        raise SchedulerError(f"{op.replace('_', ' ')}: {answer['error']}")
                    return answer["result"]
            time.sleep(0.02)
        raise SchedulerError(f"scheduler {name!r} did not answer {op.replace('_', ' ')} within {timeout:.0f} s at "
                             f"{client.url}; is it running? (embedded: af.submit() starts one; remote: "
                             "`aiflow server start`)")

    def _workflow(self, workflow: Any, project: str | None) -> dict[str, Any]:
        # a server reached over a connection runs jobs in its own working directory (docs/remote.md)
        cwd = os.getcwd() if getattr(self.scheduler.blobs, "shares_filesystem", True) else None
        if isinstance(workflow, str):
            return {"workflow": workflow, "project": project, "cwd": cwd}
        uri = self.scheduler.blobs.put(workflow.to_bytes())
        return {"uri": uri, "project": project or workflow.project, "cwd": cwd}
