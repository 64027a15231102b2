"""Model versions swapped inside a running job (action ``SWAP``), without a restart.

Why a listener in each scoring instance rather than a broadcast stream of versions into the job: the
versions are events on the bus already, the scoring function is a vectorized Python function (PyFlink
has no broadcast state for those), and loading a model must happen off the scoring path — a listener
thread loads the new version while the instance goes on scoring with the old one, then switches between
two batches. Scoring never waits for a load.

The conversation, all on key ``<workflow>.<job>`` in the job's run (see ``core.vocabulary``):

1. the scheduler decides SWAP for the running job and sends ``MODEL_SWAP_REQUESTED`` {model, version, uri};
2. each instance (a parallel subtask of the scoring function) loads it and switches, then sends
   ``MODEL_SWAP_LOADED`` {instance, instances}; one that cannot load it sends ``MODEL_SWAP_FAILED``
   {error} and keeps the version it has;
3. instance 0 waits until every instance has loaded the version, then sends ``MODEL_SWAPPED`` once.

A restarted job (from a savepoint) starts on the newest version its run's job was swapped to
(``MODEL_SWAPPED``) after the event that started it; a restarted instance (a Flink failover) replays the
newest request sent since then. A request for the version an instance already serves changes nothing
but its ``MODEL_SWAP_LOADED``, and ``MODEL_SWAPPED`` is said once per request.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from aiflow_notebook.core.vocabulary import (
    DEFAULT_NAMESPACE,
    JOB_STATUS_CHANGED,
    MODEL_SWAP_FAILED,
    MODEL_SWAP_LOADED,
    MODEL_SWAP_REQUESTED,
    MODEL_SWAPPED,
    JobState,
    run_context,
)
from aiflow_notebook.core.waiting import Deadline

log = logging.getLogger(__name__)

ALL_LOADED_TIMEOUT_S = 120.0  # instance 0 gives up waiting for the others (they said why, or died)


@dataclass(frozen=True)
class SwapPlan:
    """What each scoring instance needs to follow swaps: the bus, the job's key, its run and job run, the
    model, and the event version after which requests count."""

    url: str
    key: str
    run_id: int
    job_run_id: int | None
    model: str
    since: int
    auth: Any = None  # the job's CURVE keys in memory (events.auth.CurveAuth.of_job): workers elsewhere reach the bus

    def context(self, **fields: Any) -> str:
        return json.dumps(run_context(self.run_id, job_run=self.job_run_id, **fields))


def swap_start(client: Any, spec: dict[str, Any], model: str, trigger: dict[str, Any] | None
               ) -> tuple[SwapPlan, int | None, str | None]:
    """In the job process, when a streaming predict node starts: the plan its instances follow, and the
    version it must start on if its run's job was swapped since the event that started it (else None),
    with a sentence for the job log."""
    run_id, key = int(spec["run_id"]), f"{spec['workflow']}.{spec['job']['name']}"
    after = int(trigger["version"]) if trigger and trigger.get("version") else 0
    swapped = [e for e in client.list_events(key=key, event_type=MODEL_SWAPPED, since_version=after)
               if _in_run(e, run_id) and _value(e).get("model") == model]
    version, why, since = None, None, after
    if swapped:
        version, since = int(_value(swapped[-1])["version"]), swapped[-1].version
        why = f"the job was swapped to version {version} (event {since}) before this start"
    else:
        starting = [e for e in client.list_events(key=key, event_type=JOB_STATUS_CHANGED, since_version=after)
                    if e.value == JobState.STARTING and _context(e).get("job_run") == spec.get("job_run_id")]
        since = max(since, starting[-1].version if starting else client.latest_version())
    from aiflow_notebook.events.auth import CurveAuth

    plan = SwapPlan(client.url, key, run_id, spec.get("job_run_id"), model, since, CurveAuth.of_job())
    return plan, version, why


class ModelSlot:
    """The (model, version) one scoring instance uses now; a listener thread switches it on requests."""

    def __init__(self, plan: SwapPlan, model: Any, version: int, instance: int, instances: int,
                 load: Any) -> None:
        self.plan, self.instance, self.instances = plan, instance, instances
        self._current = (model, version)
        self._load = load  # uri -> model object (model_io.load_model)
        self._client = None
        self._listener = None

    @property
    def current(self) -> tuple[Any, int]:
        return self._current

    def start(self) -> ModelSlot:
        """Follow requests from a thread of its own: opening the scoring function never waits for the bus,
        and an instance that cannot reach it goes on scoring with the version it has (and says why)."""
        threading.Thread(target=self._follow, name=f"aiflow-swaps-{self.plan.key}", daemon=True).start()
        return self

    def _follow(self) -> None:
        from aiflow_notebook.events import EventClient

        try:
            client = EventClient(self.plan.url, auth=self.plan.auth)
            self._client = client
            # a restarted instance: only the newest request since the plan's start matters (not each in turn)
            requests = [e for e in client.list_events(key=self.plan.key, event_type=MODEL_SWAP_REQUESTED,
                                                      since_version=self.plan.since)
                        if _in_run(e, self.plan.run_id) and _value(e).get("model") == self.plan.model]
            since = requests[-1].version - 1 if requests else self.plan.since
            self._listener = client.listen(self.plan.key, since_version=since, callback=self._on_event,
                                           event_type=MODEL_SWAP_REQUESTED)
        except Exception as exc:  # noqa: BLE001 - scoring goes on; the instance just cannot swap
            log.warning("%s: instance %s cannot follow model swaps (bus %s): %s", self.plan.key, self.instance,
                        self.plan.url, exc)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _on_event(self, event: Any) -> None:
        request = _value(event)
        if not _in_run(event, self.plan.run_id) or request.get("model") != self.plan.model:
            return
        version = int(request["version"])
        if version == self._current[1]:
            self._say(MODEL_SWAP_LOADED, version, request=event.version)
            return
        try:
            model = self._load(request["uri"])
        except Exception as exc:  # noqa: BLE001 - any failure to load: keep serving, say why
            log.warning("%s: cannot load %s version %s: %s", self.plan.key, self.plan.model, version, exc)
            self._say(MODEL_SWAP_FAILED, version, request=event.version, error=f"{type(exc).__name__}: {exc}"[:2000])
            return
        self._current = (model, version)  # one assignment: the next batch scores with it
        self._say(MODEL_SWAP_LOADED, version, request=event.version)
        if self.instance == 0:
            threading.Thread(target=self._announce_when_all_loaded, args=(version, event.version),
                             name=f"aiflow-swap-{version}", daemon=True).start()

    def _announce_when_all_loaded(self, version: int, request: int) -> None:
        """Instance 0: once every instance loaded ``version`` (their MODEL_SWAP_LOADED), say MODEL_SWAPPED."""
        try:
            self._wait_and_announce(version, request)
        except Exception as exc:  # noqa: BLE001 - the instance is closing (its client closed): nothing to say
            log.info("%s: no MODEL_SWAPPED for version %s: %s", self.plan.key, version, exc)

    def _wait_and_announce(self, version: int, request: int) -> None:
        client, deadline = self._client, Deadline(ALL_LOADED_TIMEOUT_S)
        while client is not None and not deadline.passed:
            loaded = {_value(e).get("instance") for e in client.list_events(
                key=self.plan.key, event_type=MODEL_SWAP_LOADED, since_version=request)
                if _in_run(e, self.plan.run_id) and _value(e).get("version") == version}
            if loaded >= set(range(self.instances)):
                announced = [e for e in client.list_events(key=self.plan.key, event_type=MODEL_SWAPPED,
                                                           since_version=request)
                             if _in_run(e, self.plan.run_id) and _value(e).get("request") == request]
                if not announced:  # (a restarted instance 0 replays the newest request: say it once)
                    self._say(MODEL_SWAPPED, version, request=request)
                return
            deadline.sleep(0.05)
        log.warning("%s: not every instance loaded version %s within %s s", self.plan.key, version,
                    ALL_LOADED_TIMEOUT_S)

    def _say(self, event_type: str, version: int, **fields: Any) -> None:
        client = self._client
        if client is None:
            return
        value = {"model": self.plan.model, "version": version, "instance": self.instance,
                 "instances": self.instances, **fields}
        client.send_event(key=self.plan.key, value=json.dumps(value), event_type=event_type,
                          namespace=DEFAULT_NAMESPACE, context=self.plan.context())


def _value(event: Any) -> dict[str, Any]:
    try:
        value = json.loads(event.value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _context(event: Any) -> dict[str, Any]:
    try:
        context = json.loads(event.context) if event.context else {}
    except ValueError:
        return {}
    return context if isinstance(context, dict) else {}


def _in_run(event: Any, run_id: int) -> bool:
    return _context(event).get("run") == run_id
