"""Models swapped in place (issue 20, part 3): action SWAP on a streaming Flink job, for real.

A streaming scoring job of parallelism 2 under a steady input (a file of 20 ids every 0.2 s); model
versions are validated one after another with a SWAP rule. The job starts once (SWAP starts a job that
is not running), switches versions without a restart, announces each switch once every instance has it,
keeps scoring on the old version when a new one cannot be loaded, and scores every record exactly once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import MODEL_SWAP_FAILED, MODEL_SWAPPED
from aiflow_notebook.core.waiting import wait_until
from aiflow_notebook.engines.model_io import save_model
from aiflow_notebook.scheduler import EmbeddedScheduler
from aiflow_notebook.storage.part_files import read_lines

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Tagger:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def predict(self, row):
        return [row[0], self.tag]

    def predict_batch(self, rows):
        return [[i, self.tag] for i in rows["id"].tolist()]


def test_swap_is_only_for_model_version_rules():
    with af.workflow("swap_rules"):
        with pytest.raises(AIFlowError, match="action SWAP switches a running job"):
            af.action_on_job_status("serve", upstream="train", action="SWAP")
        edge = af.action_on_model_version_event("serve", model="m", event_type="MODEL_VALIDATED", action=af.SWAP)
    assert edge.label == "MODEL_VALIDATED → SWAP"


class Feeder:
    """Writes a file of 20 new ids into the stream directory every 0.2 s; remembers when each id was sent."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.sent, self.stop = directory, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = 0
        while not self.stop.is_set():
            ids = range(batch * 20, batch * 20 + 20)
            staged = self.directory.parent / f"staged-{batch}"
            staged.write_text("".join(f"{i}\n" for i in ids))
            staged.rename(self.directory / f"batch-{batch}.csv")
            now = time.time()
            self.sent.update({i: now for i in ids})
            batch += 1
            self.stop.wait(0.2)


def diagnosis(run, store) -> str:
    """The job's events and the tail of its log, printed when the test fails."""
    lines = [f"{e.version} {e.event_type} {e.value} {e.context}" for e in run.client.list_events(key="swapping.serve")]
    for e in run.job_events():
        if e.value == "STARTING":
            log = Path(store.get_job_run(json.loads(e.context)["job_run"]).log_uri.removeprefix("file://"))
            lines += log.read_text().splitlines()[-60:] if log.exists() else []
    return "\n".join(lines)


def swapping_workflow(tmp_path: Path, parallelism: int) -> Path:
    """Workflow ``swapping``: a streaming ``serve`` that scores ``data/stream`` with ``tagger`` (with the
    version) into ``data/scores``, and a SWAP rule on MODEL_VALIDATED. Returns ``data``."""
    data = tmp_path / "data"
    (data / "stream").mkdir(parents=True)
    with af.workflow("swapping"):
        with af.job_config("serve", engine="flink", streaming=True, parallelism=parallelism):
            rows = af.read_dataset("stream", uri=str(data / "stream"), schema={"id": "int"})
            af.write_dataset(af.predict(rows, model="tagger", with_version=True), "scores", uri=str(data / "scores"))
        af.action_on_model_version_event("serve", model="tagger", event_type="MODEL_VALIDATED", action="SWAP")
    return data


def validate(store, model, missing: Path | None = None) -> int:
    """Register ``model`` as a new version of ``tagger`` (or, with ``missing``, a version whose file is not
    there) and validate it: the MODEL_VALIDATED that SWAP rules act on. Returns the version."""
    uri = str(missing) if missing is not None else save_model(model, "tagger")
    version = store.register_model_version("tagger", uri=uri).version
    store.update_model_version("tagger", version, "VALIDATED")
    return version


def events(run, event_type):
    return [e for e in run.client.list_events(key="swapping.serve", event_type=event_type)]


@pytest.mark.slow
def test_three_swaps_and_a_bad_version_on_a_running_job_lose_and_repeat_nothing(tmp_path, aiflow_home):
    data = swapping_workflow(tmp_path, parallelism=2)
    feeder = Feeder(data / "stream")
    with EmbeddedScheduler() as scheduler:
        store = scheduler.store
        store.register_model("tagger")

        run = scheduler.submit(af.compile("swapping"))
        try:
            validate(store, Tagger("v1"))  # SWAP of a job that is not running starts it
            run.wait_for("serve", "RUNNING", timeout=180)
            feeder.thread.start()
            wait_until(lambda: read_lines(data / "scores"), timeout=120, what="first scores")
            swapped_at = {}
            for tag in ("v2", "v3", "v4"):
                version = validate(store, Tagger(tag))
                found = wait_until(lambda v=version: [e for e in events(run, MODEL_SWAPPED)
                                                      if json.loads(e.value)["version"] == v],
                                   timeout=60, what=f"MODEL_SWAPPED of version {version}")
                assert len(found) == 1
                swapped_at[version] = found[0].create_time / 1000
            bad = validate(store, None, missing=tmp_path / "no-such-model.pkl")
            failed = wait_until(lambda: [e for e in events(run, MODEL_SWAP_FAILED)
                                         if json.loads(e.value)["version"] == bad], timeout=60,
                                what="MODEL_SWAP_FAILED of the version that cannot load")
            assert "no-such-model" in json.loads(failed[0].value)["error"]
            time.sleep(2)  # scoring goes on, with v4
            states = [e.value for e in run.job_events() if e.key == "swapping.serve"]
            run.restart_job("serve")  # a savepoint restart after the swaps: back on v4, not on v1
            wait_until(lambda: [e.value for e in run.job_events() if e.key == "swapping.serve"].count("RUNNING") == 2,
                       timeout=180, what="serve to restart")
            restarted_at = time.time()
            time.sleep(4)
            feeder.stop.set()
            feeder.thread.join()
            sent = dict(feeder.sent)
            wait_until(lambda: len(read_lines(data / "scores")) >= len(sent), timeout=120, what="every id scored")
            assert "the job was swapped to version 4" in diagnosis(run, store)
        except Exception:
            print(diagnosis(run, store))
            raise
        finally:
            feeder.stop.set()
            run.stop()
    scores = [line.split(",") for line in read_lines(data / "scores")]
    ids = [int(i) for i, _, _ in scores]
    assert sorted(ids) == sorted(sent), "every record scored exactly once"
    assert states[:2] == ["STARTING", "RUNNING"] and states.count("STARTING") == 1, "no restart"
    for _id, tag, version in scores:
        assert tag == f"v{version}", "the tag of the version that scored it"
    after = max(swapped_at.values()) + 1.0  # sent a second after the last swap: scored by it
    assert {version for i, _, version in scores if sent[int(i)] > after} == {"4"}
    assert any(sent[int(i)] > restarted_at for i, _, _ in scores), "records scored after the restart (by v4)"


class FailsOnceAfterSwap(Tagger):
    """A version whose first batch fails its instance (a Flink failover in the middle of the swap)."""

    def __init__(self, tag: str, flag: str) -> None:
        super().__init__(tag)
        self.flag = flag

    def predict_batch(self, rows):
        flag = Path(self.flag)
        if not flag.exists():
            flag.write_text("failed once")
            raise RuntimeError("instance lost in the middle of a swap")
        return super().predict_batch(rows)


@pytest.mark.slow
def test_a_failover_in_the_middle_of_a_swap_comes_back_on_the_new_version_exactly_once(tmp_path, aiflow_home):
    data = swapping_workflow(tmp_path, parallelism=2)
    feeder = Feeder(data / "stream")
    with EmbeddedScheduler() as scheduler:
        store = scheduler.store
        store.register_model("tagger")
        validate(store, Tagger("v1"))
        run = scheduler.submit(af.compile("swapping"))
        try:
            run.wait_for("serve", "RUNNING", timeout=180)
            feeder.thread.start()
            wait_until(lambda: read_lines(data / "scores"), timeout=120, what="first scores")
            flag = tmp_path / "failed-once"
            second = validate(store, FailsOnceAfterSwap("v2", str(flag)))
            wait_until(flag.exists, timeout=60, what="the failure after the swap")
            swapped_back = time.time()
            time.sleep(8)  # Flink restarts the failed tasks; they come back on v2
            feeder.stop.set()
            feeder.thread.join()
            sent = dict(feeder.sent)
            wait_until(lambda: len(read_lines(data / "scores")) >= len(sent), timeout=180, what="every id scored")
            states = [e.value for e in run.job_events() if e.key == "swapping.serve"]
        except Exception:
            print(diagnosis(run, store))
            raise
        finally:
            feeder.stop.set()
            run.stop()
    scores = [line.split(",") for line in read_lines(data / "scores")]
    assert sorted(int(i) for i, _, _ in scores) == sorted(sent), "every record scored exactly once"
    assert states.count("STARTING") == 1, "a Flink failover, not a restart of the job"
    late = {version for i, _, version in scores if sent[int(i)] > swapped_back + 4}
    assert late == {str(second)}, "after the failover the instances serve the version they had swapped to"


@pytest.mark.slow
def test_two_live_runs_each_swap_only_on_their_own_runs_event(tmp_path, aiflow_home):
    from aiflow_notebook.core.vocabulary import MODEL_SWAP_REQUESTED, run_context
    from aiflow_notebook.events import Event

    data = swapping_workflow(tmp_path, parallelism=1)
    with EmbeddedScheduler() as scheduler:
        store = scheduler.store
        store.register_model("tagger")
        runs = [scheduler.submit(af.compile("swapping")) for _ in range(2)]
        try:
            first = validate(store, Tagger("v1"))  # global: both runs' serve start on it
            for run in runs:
                run.wait_for("serve", "RUNNING", timeout=180)
            (data / "stream" / "a.csv").write_text("1\n2\n")
            second = store.register_model_version("tagger", uri=save_model(Tagger("v2"), "tagger")).version
            mine = runs[0].run_id  # a MODEL_VALIDATED sent from a job of the first run: that run's event only
            runs[0].client.send_event(Event(key="tagger", value=json.dumps({"version": second}),
                                            event_type="MODEL_VALIDATED",
                                            context=json.dumps(run_context(mine, workflow="swapping",
                                                                           project="default"))))
            swapped = wait_until(lambda: [e for e in events(runs[0], MODEL_SWAPPED)
                                          if json.loads(e.context)["run"] == mine], timeout=90,
                                 what="the first run's serve to swap")
            time.sleep(2)
            requests = events(runs[0], MODEL_SWAP_REQUESTED)
        except Exception:
            print(diagnosis(runs[0], store))
            raise
        finally:
            for run in runs:
                run.stop()
    assert [json.loads(e.value)["version"] for e in swapped] == [second]
    asked = {json.loads(e.context)["run"] for e in requests if json.loads(e.value)["version"] == second}
    assert asked == {mine}, "the other run was not asked to swap to the first run's version"
    assert {json.loads(e.context)["run"] for e in requests if json.loads(e.value)["version"] == first} == \
        {run.run_id for run in runs}, "a global event swaps every live run"
