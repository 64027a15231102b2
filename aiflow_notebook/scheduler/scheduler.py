"""The event-driven scheduler: events in, rules evaluated, jobs started / stopped / restarted.

:class:`Scheduler` puts the parts together and runs them; each part is a module of its own, given what it
needs explicitly:

- ``loop``: one thread takes, strictly in order, events from the bus and exits of job processes, and hands
  them to ``decide`` (rules and triggers on a batch of events, one commit), ``commands`` (submit, stop a
  run, restart a job), ``schedules`` (schedule commands, the clock) and ``settle`` (exits);
- ``actions`` carries out what was decided (the outbox): it starts job processes through ``launch``,
  stops them on threads of their own and follows each with a watcher; an exit becomes a
  ``JOB_STATUS_CHANGED`` event on the bus (``announce``) and comes back through the listener to fire
  downstream rules;
- ``recovery`` runs at start-up: it adopts live job processes, settles those that ended while the
  scheduler was down, finishes pending actions and re-publishes what the bus does not have.

Exactly-once (see ``state``): an event's effects commit in one transaction with its version; decided
actions go through an outbox; a job run is committed before its process starts. The loop never waits on
a job, only on the database: a write that fails (the database locked, read-only or down) is retried until
it succeeds (``durable``), and an event's effects become visible in memory only once they are committed,
so an outage delays decisions but never loses or repeats one.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER, WILDCARD
from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.events import EventClient
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.admission import Admission
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.commands import Commands
from aiflow_notebook.scheduler.decide import Decisions
from aiflow_notebook.scheduler.durable import Durable
from aiflow_notebook.scheduler.intake import Intake
from aiflow_notebook.scheduler.launch import Launcher
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.loop import EVENT, Loop
from aiflow_notebook.scheduler.paths import Paths
from aiflow_notebook.scheduler.periodic import PeriodicJobs, TickLateness
from aiflow_notebook.scheduler.recovery import Recovery
from aiflow_notebook.scheduler.schedule_state import ScheduleState
from aiflow_notebook.scheduler.schedules import Schedules
from aiflow_notebook.scheduler.settle import Settler
from aiflow_notebook.scheduler.state import SchedulerState
from aiflow_notebook.storage.blobs import BlobStore, LocalBlobStore

# The interpreter's thread switch interval while a scheduler runs in the process (Python's default: 5 ms).
# The loop shares the GIL with the event server and the listeners; a thread woken by a commit or a
# message waited up to the whole interval for the GIL, which was most of the decision p99
# (bench/scheduler_bench.py: p99 6-7 ms at 5 ms, 4.5-4.8 ms at 0.5 ms). Only ever lowered, never raised.
SWITCH_INTERVAL_S = 0.0005
KILL_GRACE_S = 5  # the grace period of each job that ``stop(kill_jobs=True)`` stops


class Scheduler:
    """Runs submitted workflows. ``start()`` recovers and begins listening; ``stop()`` ends the loop
    (jobs keep running unless ``kill_jobs``; a restarted scheduler adopts them).

    ``authorize``: when set (a CURVE server sets it), ``authorize(sender)`` must hold for a submission or
    a stop request to be obeyed; the bus stores the authenticated client's name as the sender.
    ``record_decisions``: keep the seconds from each deciding event's arrival to its actions being
    committed in ``decision_seconds`` (benchmarks).
    """

    def __init__(self, store: MetadataStore, client: EventClient, *, name: str = DEFAULT_SCHEDULER,
                 home: str | Path | None = None, blob_store: BlobStore | None = None,
                 job_env: dict[str, str] | None = None, record_decisions: bool = False):
        self.store, self.client, self.name = store, client, name
        self.home = Path(home) if home is not None else aiflow_home()
        self.blobs = blob_store or LocalBlobStore(self.home / "blobs")
        self.job_env = dict(job_env or {})
        self.decision_seconds: list[float] | None = [] if record_decisions else None
        self._stop = threading.Event()
        self._inbox: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._listener = None
        # The loop's database calls wait out an outage (see ``durable``); ``store`` stays the plain store.
        self.state = Durable(SchedulerState(store, name), self._stop, name)
        self._store = Durable(store, self._stop, name)
        self._schedule_state = Durable(ScheduleState(SchedulerState(store, name)), self._stop, name)
        self.admission = Admission()
        self.live = Live(self._store)
        self.announcer = Announcer(client, name)
        self.launcher = Launcher(Paths(self.home), self.blobs, store._db.url, client.url, self.job_env)
        self._assemble()

    def _assemble(self) -> None:
        """The parts, each given what it uses."""
        state, store, live, announcer = self.state, self._store, self.live, self.announcer
        actions = Actions(state, live, self.launcher, announcer, self.client, self._inbox, self._stop)
        periodic = PeriodicJobs(self._schedule_state, live, actions, TickLateness())
        settler = Settler(state, store, live, actions, periodic, announcer, self.launcher.paths)
        intake = Intake(state, live, periodic, actions, announcer)
        self.schedules = Schedules(self._schedule_state, state, store, self.blobs, live, intake, periodic,
                                   self.admission, announcer)
        commands = Commands(state, store, self.blobs, live, intake, actions, settler, announcer, self.admission)
        decisions = Decisions(state, live, self.schedules, actions, settler, self.decision_seconds)
        self.recovery = Recovery(state, store, self.blobs, live, self.launcher, actions, settler, announcer,
                                 self.client)
        self.loop = Loop(self.name, self._inbox, self._stop, live, decisions, commands, self.schedules, settler)

    @property
    def authorize(self) -> Callable[[str | None], bool] | None:
        return self.admission.authorize

    @authorize.setter
    def authorize(self, check: Callable[[str | None], bool] | None) -> None:
        self.admission.authorize = check

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Scheduler:
        """Recover what an earlier scheduler left and begin deciding. Raises ``DatabaseWaitTimeout`` if the
        database stays unusable for ``timeout`` seconds meanwhile (later, the loop waits it out)."""
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._patience(Deadline(timeout))
        try:
            self.recovery.recover()
            self.live.last_seen = self.state.last_version()
            self.schedules.recover()
        finally:
            self._patience(None)
        self._listener = self.client.listen(WILDCARD, since_version=self.state.last_version(),
                                            callback=lambda event: self._inbox.put((EVENT, (event, time.perf_counter()))))
        self._thread = threading.Thread(target=self.loop.run, name=f"aiflow-scheduler-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _patience(self, deadline: Deadline | None) -> None:
        """How long the database calls of start-up may wait out an outage (None: until stopped)."""
        self.state.deadline = self._store.deadline = self._schedule_state.deadline = deadline

    def stop(self, kill_jobs: bool = False, timeout: float = 30.0) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if kill_jobs:  # in parallel: each may take its grace period
            stoppers = [threading.Thread(target=running.process.stop, kwargs={"grace": KILL_GRACE_S}, daemon=True)
                        for running in list(self.live.running.values())]
            for stopper in stoppers:
                stopper.start()
            for stopper in stoppers:
                stopper.join(timeout + 10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
