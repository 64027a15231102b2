"""The server extension's REST API against a real Jupyter server (pytest-jupyter), a real embedded
scheduler with real job processes, a real SQLite store and the real event bus."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tornado.httpclient import HTTPResponse

import aiflow_notebook as af
from aiflow_notebook.testing.processes import wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for_async

API = ("aiflow", "api")


async def call(jp_fetch, method: str, *parts: str, body=None, params=None, headers=None) -> tuple[int, dict]:
    """One request; (status, JSON body). Never raises for a 4xx/5xx."""
    kwargs = {"method": method, "raise_error": False, "params": params, "headers": headers}
    if method in ("POST", "PATCH", "PUT"):
        kwargs["body"] = body if isinstance(body, bytes | str) else json.dumps(body if body is not None else {})
    response: HTTPResponse = await jp_fetch(*API, *parts, **kwargs)
    return response.code, json.loads(response.body or b"null")


async def get(jp_fetch, *parts: str, **params) -> dict:
    code, data = await call(jp_fetch, "GET", *parts, params={k: str(v) for k, v in params.items()})
    assert code == 200, (parts, params, code, data)
    return data


# --- job functions (run in job processes) ---------------------------------------------------------------

def serve_forever(context):
    import time

    with Path(context.properties["marker"]).open("a") as fh:
        fh.write("started\n")
    n = 0
    while True:
        print(f"serving {n}", flush=True)
        n += 1
        time.sleep(0.1)


def prepare():
    print("prepared", flush=True)
    return [[1]]


# --- runs, jobs, logs, stop, restart ----------------------------------------------------------------------

async def test_runs_jobs_logs_restart_and_stop_through_the_api(jp_fetch, jp_serverapp, aiflow_home, tmp_path):
    marker = tmp_path / "starts.txt"
    with af.workflow("other"):
        with af.job_config("prep"):
            af.user_define_operation(prepare, name="prep")
    with af.workflow("served"):
        with af.job_config("serve"):
            af.user_define_operation(serve_forever, name="serve", properties={"marker": str(marker)})
        with af.job_config("prep"):
            af.user_define_operation(prepare, name="prep")
        af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED", action="RESTART")
    # af.submit in the server's process uses the scheduler the extension started
    other = await asyncio.to_thread(af.submit, "other")
    await asyncio.to_thread(other.wait, 60)
    run = await asyncio.to_thread(af.submit, "served")

    async def serve_state(state: str, attempts: int):
        detail = await get(jp_fetch, "runs", str(run.run_id))
        jobs = {job["name"]: job for job in detail["jobs"]}
        serve = jobs["serve"]
        return detail if serve["state"] == state and serve["attempts"] == attempts else None

    detail = await wait_for_async(lambda: serve_state("RUNNING", 1), what="serve to run")
    assert detail["workflow"] == "served" and detail["state"] == "RUNNING" and detail["scheduler"] == "default"
    assert [job["name"] for job in detail["jobs"]] == ["serve", "prep"]
    assert detail["control_edges"][0]["action"] == "RESTART"
    code, answer = await call(jp_fetch, "POST", "runs", str(run.run_id), "jobs", "nojob", "restart")
    assert code == 404 and "has no job 'nojob'; its jobs: serve, prep" in answer["error"]

    runs = (await get(jp_fetch, "runs"))["runs"]
    assert [(r["id"], r["workflow"]) for r in runs] == [(run.run_id, "served"), (other.run_id, "other")]
    assert [r["id"] for r in (await get(jp_fetch, "runs", workflow="other"))["runs"]] == [other.run_id]
    assert (await get(jp_fetch, "runs", workflow="nothing"))["runs"] == []
    workflows = (await get(jp_fetch, "workflows"))["workflows"]
    assert [(w["name"], w["runs"], w["latest_run"]["id"]) for w in workflows] == [
        ("served", 1, run.run_id), ("other", 1, other.run_id)]

    async def log_lines():
        answer = await get(jp_fetch, "runs", str(run.run_id), "jobs", "serve", "log", tail=3)
        lines = answer["log"].splitlines()
        return answer if len(lines) == 3 and all(line.startswith("serving ") for line in lines) else None

    log = await wait_for_async(log_lines, what="three lines of serve's log")
    numbers = [int(line.split()[1]) for line in log["log"].splitlines()]
    assert numbers == sorted(numbers) and log["attempt"] == 0 and log["state"] == "RUNNING"

    # restart one job: its process is stopped (KILLED) and a new attempt runs; the run goes on
    code, answer = await call(jp_fetch, "POST", "runs", str(run.run_id), "jobs", "serve", "restart")
    assert code == 202 and answer["requested"] is True, answer
    detail = await wait_for_async(lambda: serve_state("RUNNING", 2), what="serve's second attempt")
    serve = next(job for job in detail["jobs"] if job["name"] == "serve")
    assert [attempt["state"] for attempt in serve["job_runs"]] == ["KILLED", "RUNNING"]
    assert serve["job_runs"][0]["ended_at"] is not None and serve["attempt"] == 1
    assert detail["state"] == "RUNNING"

    async def starts(count: int) -> bool:
        return marker.read_text().count("started") == count

    await wait_for_async(lambda: starts(2), what="serve's second process to start")

    # a stage change through the API publishes MODEL_VALIDATED: the serving rule restarts the job
    await asyncio.to_thread(af.register_model, "ctr")
    await asyncio.to_thread(af.register_model_version, "ctr", "file:///m/1")
    code, version = await call(jp_fetch, "PATCH", "models", "ctr", "versions", "1", body={"stage": "VALIDATED"})
    assert code == 200 and version["stage"] == "VALIDATED", version
    await wait_for_async(lambda: serve_state("RUNNING", 3), what="serve restarted by MODEL_VALIDATED")
    await wait_for_async(lambda: starts(3), what="serve's third process to start")

    events = (await get(jp_fetch, "events", key="served.serve"))["events"]
    assert [e["value"] for e in events] == ["STARTING", "RUNNING", "KILLED", "STARTING", "RUNNING", "KILLED",
                                            "STARTING", "RUNNING"]
    assert {e["run_id"] for e in events} == {run.run_id}

    code, answer = await call(jp_fetch, "POST", "runs", str(run.run_id), "stop")
    assert code == 202 and answer["requested"] is True

    async def run_killed():
        detail = await get(jp_fetch, "runs", str(run.run_id))
        return detail if detail["state"] == "KILLED" else None

    detail = await wait_for_async(run_killed, what="the run to end KILLED")
    assert {job["name"]: job["state"] for job in detail["jobs"]} == {"serve": "KILLED", "prep": "FINISHED"}
    assert (await asyncio.to_thread(wait_no_process_left, cmdline=str(aiflow_home / "runs"))) == []

    # what no longer fits the run's state is refused, with the reason
    code, answer = await call(jp_fetch, "POST", "runs", str(run.run_id), "jobs", "serve", "restart")
    assert code == 409 and "already ended KILLED" in answer["error"]
    code, answer = await call(jp_fetch, "POST", "runs", str(run.run_id), "stop")
    assert code == 200 and answer == {"run": run.run_id, "state": "KILLED", "requested": False}

    # re-run: the recorded workflow again, as a new run of its own (the old one stays KILLED)
    code, answer = await call(jp_fetch, "POST", "runs", str(other.run_id), "rerun")
    assert code == 201 and answer["rerun_of"] == other.run_id and answer["workflow"] == "other", answer
    assert answer["run"] not in (run.run_id, other.run_id)

    async def rerun_finished():
        detail = await get(jp_fetch, "runs", str(answer["run"]))
        return detail if detail["state"] == "FINISHED" else None

    detail = await wait_for_async(rerun_finished, what="the re-run to finish")
    assert {job["name"]: job["state"] for job in detail["jobs"]} == {"prep": "FINISHED"}
    assert (await get(jp_fetch, "runs", str(run.run_id)))["state"] == "KILLED"


async def test_events_page_forward_and_show_the_newest(jp_fetch, jp_serverapp):
    client = jp_serverapp.web_app.settings["aiflow_service"].client
    from aiflow_notebook.events import Event

    sent = await asyncio.to_thread(client.send_events, [Event(key=f"k{i % 2}", value=str(i)) for i in range(10)])
    first = min(e.version for e in sent)
    newest = await get(jp_fetch, "events", key="k1", limit=2)
    assert [e["value"] for e in newest["events"]] == ["7", "9"]
    assert newest["latest_version"] >= max(e.version for e in sent)
    page = await get(jp_fetch, "events", since_version=first - 1, limit=3)
    assert [e["value"] for e in page["events"]] == ["0", "1", "2"]
    event = page["events"][0]
    assert set(event) == {"version", "key", "value", "event_type", "namespace", "sender", "context", "create_time",
                          "run_id"}
    assert isinstance(event["create_time"], float) and event["run_id"] is None and event["version"] == first


# --- models and lineage -----------------------------------------------------------------------------------

async def test_models_versions_stages_and_lineage(jp_fetch, jp_serverapp):
    store = jp_serverapp.web_app.settings["aiflow_service"].store

    def record() -> None:
        store.register_model("ctr", "click-through rate")
        store.register_dataset("clicks", uri="file:///data/clicks")
        job_run = store.start_job_run("train_wf", "train")
        store.record_dataset_read(job_run, "clicks")
        store.register_model_version("ctr", uri="file:///m/1", metrics={"auc": 0.7}, job_run=job_run)
        store.register_model_version("ctr", uri="file:///m/2", metrics={"auc": 0.8})

    await asyncio.to_thread(record)
    models = (await get(jp_fetch, "models"))["models"]
    assert [(m["name"], m["versions"], m["stages"], m["latest_version"]["version"]) for m in models] == [
        ("ctr", 2, {"GENERATED": 2}, 2)]
    versions = (await get(jp_fetch, "models", "ctr", "versions"))["versions"]
    assert [(v["version"], v["stage"], v["metrics"]) for v in versions] == [
        (2, "GENERATED", {"auc": 0.8}), (1, "GENERATED", {"auc": 0.7})]

    code, answer = await call(jp_fetch, "PATCH", "models", "ctr", "versions", "2", body={"stage": "deployed"})
    assert code == 200 and answer["stage"] == "DEPLOYED" and answer["version"] == 2
    assert (await asyncio.to_thread(store.get_model_version, "ctr", 2)).stage == "DEPLOYED"
    published = (await get(jp_fetch, "events", key="ctr"))["events"]
    assert published[-1]["event_type"] == "MODEL_DEPLOYED" and json.loads(published[-1]["value"])["version"] == 2
    assert published[-1]["sender"] == "model_center"

    lineage = await get(jp_fetch, "lineage", "ctr", "1")
    kinds = {node["kind"]: node for node in lineage["nodes"]}
    assert set(kinds) == {"dataset", "job_run", "model_version"}
    assert kinds["model_version"]["attrs"] == {"model": "ctr", "version": 1, "stage": "GENERATED"}
    assert {(e["source"].split("_")[0], e["relation"]) for e in lineage["edges"]} == {("dataset", "read_by"),
                                                                                     ("job", "produced")}


# --- authentication: every route ------------------------------------------------------------------------

ROUTES = [
    ("GET", "workflows"),
    ("GET", "runs"),
    ("GET", "runs/1"),
    ("POST", "runs/1/stop"),
    ("POST", "runs/1/rerun"),
    ("POST", "runs/1/jobs/serve/restart"),
    ("GET", "runs/1/jobs/serve/log"),
    ("GET", "events"),
    ("GET", "models"),
    ("GET", "models/ctr/versions"),
    ("PATCH", "models/ctr/versions/1"),
    ("GET", "lineage/ctr/1"),
    ("GET", "no/such/route"),
]


@pytest.mark.parametrize("method,path", ROUTES)
async def test_every_route_refuses_an_anonymous_request(jp_fetch, jp_serverapp, method, path):
    store = jp_serverapp.web_app.settings["aiflow_service"].store
    await asyncio.to_thread(store.register_model, "ctr")
    await asyncio.to_thread(store.register_model_version, "ctr", "file:///m/1")
    for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
        code, answer = await call(jp_fetch, method, *path.split("/"), body={"stage": "DELETED"}, headers=headers)
        assert code == 403, (method, path, headers, code, answer)
        assert answer["error"]  # tornado's XSRF check may be the one that refuses a POST
    assert (await asyncio.to_thread(store.get_model_version, "ctr", 1)).stage == "GENERATED"  # nothing changed


async def test_the_push_channel_refuses_an_anonymous_subscriber(jp_ws_fetch, jp_auth_header):
    from tornado.httpclient import HTTPClientError

    jp_auth_header["Authorization"] = ""  # jp_ws_fetch adds this header to its request
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("api", "events", "subscribe")
    assert refused.value.code == 403


# --- bad input --------------------------------------------------------------------------------------------

BAD = [
    ("GET", "runs/999", None, {}, 404, "run 999 does not exist"),
    ("GET", "runs/abc", None, {}, 400, "the run id must be an integer"),
    ("GET", "runs/0", None, {}, 400, "the run id must be at least 1"),
    ("GET", "runs", None, {"limit": "many"}, 400, "'limit' must be an integer"),
    ("POST", "runs/999/stop", None, {}, 404, "run 999 does not exist"),
    ("POST", "runs/999/rerun", None, {}, 404, "run 999 does not exist"),
    ("POST", "runs/999/jobs/serve/restart", None, {}, 404, "run 999 does not exist"),
    ("GET", "runs/999/jobs/serve/log", None, {}, 404, "run 999 does not exist"),
    ("GET", "runs/1/jobs/serve/log", None, {"tail": "0"}, 400, "'tail' must be from 1 to 10000"),
    ("GET", "events", None, {"since_version": "-1"}, 400, "'since_version' must be at least 0"),
    ("GET", "events", None, {"limit": "x"}, 400, "'limit' must be an integer"),
    ("GET", "models/nope/versions", None, {}, 404, "model 'nope' is not registered"),
    ("PATCH", "models/ctr/versions/1", b"{not json", {}, 400, "not valid JSON"),
    ("PATCH", "models/ctr/versions/1", b"[1]", {}, 400, "must be a JSON object"),
    ("PATCH", "models/ctr/versions/1", {"stage": "GOLDEN"}, {}, 400, "unknown stage 'GOLDEN'"),
    ("PATCH", "models/ctr/versions/1", {"stage": 3}, {}, 400, "with a stage name"),
    ("PATCH", "models/ctr/versions/1", {"stag": "DEPLOYED"}, {}, 400, 'must be {"stage": NAME}'),
    ("PATCH", "models/ctr/versions/9", {"stage": "DEPLOYED"}, {}, 404, "model 'ctr' has no version 9"),
    ("PATCH", "models/nope/versions/1", {"stage": "DEPLOYED"}, {}, 404, "model 'nope' is not registered"),
    ("PATCH", "models/ctr/versions/one", {"stage": "DEPLOYED"}, {}, 400, "the model version must be an integer"),
    ("PATCH", "models/ctr/versions/2", {"stage": "VALIDATED"}, {}, 409, "cannot go from DELETED to VALIDATED"),
    ("GET", "lineage/nope/1", None, {}, 404, "model 'nope' is not registered"),
    ("GET", "lineage/ctr/x", None, {}, 400, "the model version must be an integer"),
    ("GET", "no/such/route", None, {}, 404, "no such route"),
]


@pytest.mark.parametrize("method,path,body,params,status,message", BAD, ids=[f"{b[0]} {b[1]} {b[3]}" for b in BAD])
async def test_bad_input_is_answered_4xx_with_a_message(jp_fetch, jp_serverapp, method, path, body, params, status,
                                                         message):
    store = jp_serverapp.web_app.settings["aiflow_service"].store

    def record() -> None:
        store.register_model("ctr")
        store.register_model_version("ctr", uri="file:///m/1")
        store.register_model_version("ctr", uri="file:///m/2")
        store.update_model_version("ctr", 2, "DELETED")

    await asyncio.to_thread(record)
    code, answer = await call(jp_fetch, method, *path.split("/"), body=body, params=params)
    assert code == status, answer
    assert message in answer["error"], answer
    assert (await asyncio.to_thread(store.get_model_version, "ctr", 1)).stage == "GENERATED"


async def test_many_requests_at_once_are_all_answered(jp_fetch, jp_serverapp):
    """Handlers share the worker threads, the store and the event client (a socket per thread)."""
    store = jp_serverapp.web_app.settings["aiflow_service"].store
    await asyncio.to_thread(store.register_model, "ctr")
    for i in range(3):
        await asyncio.to_thread(store.register_model_version, "ctr", f"file:///m/{i}")
    paths = [("runs",), ("events",), ("models",), ("models", "ctr", "versions"), ("workflows",)] * 8
    answers = await asyncio.gather(*(call(jp_fetch, "GET", *path) for path in paths),
                                   call(jp_fetch, "PATCH", "models", "ctr", "versions", "3", body={"stage": "DEPLOYED"}))
    assert [code for code, _ in answers] == [200] * len(answers), answers
    assert answers[-1][1]["stage"] == "DEPLOYED"
    versions = (await get(jp_fetch, "models", "ctr", "versions"))["versions"]
    assert [v["stage"] for v in versions] == ["DEPLOYED", "GENERATED", "GENERATED"]
