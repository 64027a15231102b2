"""Recovery of what a crash kept from the bus.

The window between committing a job's final state and publishing its status event is a few
microseconds wide, too narrow to hit with a real kill -9; so this test injects the fault (the first
scheduler fails exactly there, as if it died) and checks that the next scheduler publishes the missing
event once, and the run carries on. (kill -9 of a real server is tested in test_scheduler_remote.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import aiflow_notebook as af
from aiflow_notebook.blobs import LocalBlobStore
from aiflow_notebook.events import EventClient, EventServer
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler import Scheduler, SchedulerClient


def make():
    return [[1]]


class DiesBeforePublishingFinished(Scheduler):
    def _publish_status(self, run, job, job_run_id, attempt, state, error=None):
        if job == "a" and state == "FINISHED":
            self.stop()  # the loop ends here: the state is committed, the event never sent
            raise RuntimeError("simulated crash between commit and publish")
        super()._publish_status(run, job, job_run_id, attempt, state, error)


def test_a_final_state_committed_but_not_published_is_published_after_restart(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with af.workflow("recover"):
        with af.job_config("a"):
            af.write_dataset(af.user_define_operation(make, name="make"), "x", uri=str(tmp_path / "x.json"))
        with af.job_config("b"):
            af.write_dataset(af.transform(af.read_dataset("x"), lambda rows: rows, name="copy"), "y",
                             uri=str(tmp_path / "y.json"))
        af.action_on_job_status("b", upstream="a")
    server = EventServer(db, bind="tcp://127.0.0.1:0").start()
    client = EventClient(server.url)
    store = MetadataStore(db, publisher=EventBusPublisher(client))
    try:
        first = DiesBeforePublishingFinished(store, client, home=tmp_path).start()
        api = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs"))
        run = api.submit(af.compile("recover"))
        first._thread.join(60)
        assert not first.alive and run.jobs() == {"a": "RUNNING", "b": "INIT"}  # FINISHED never reached the bus

        second = Scheduler(store, client, home=tmp_path).start()
        assert run.wait(60) == "FINISHED"
        finished_a = [e for e in run.job_events() if e.key == "recover.a" and e.value == "FINISHED"]
        assert len(finished_a) == 1
        assert json.loads(Path(tmp_path / "y.json").read_text()) == [[1]]
        second.stop()
    finally:
        client.close()
        store.close()
        server.stop()
