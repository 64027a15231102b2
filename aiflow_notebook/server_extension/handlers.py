"""REST handlers under ``/aiflow/api/``: thin, each one parses its input, asks the service on a worker
thread and writes JSON.

Every handler is a jupyter_server ``APIHandler`` behind ``@web.authenticated`` (no valid token or login:
403) and ``@authorized`` (the server's authorizer decides per action on the resource ``aiflow``). Errors
are JSON ``{"error": "..."}`` with a 4xx status for anything wrong with the request; only a fault of
ours answers 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from aiflow_notebook.events.errors import EventServerUnavailableError
from aiflow_notebook.server_extension.service import (
    MAX_LOG_LINES,
    AIFlowService,
    RequestError,
    parse_json_object,
)
from aiflow_notebook.storage.database import DatabaseUnavailableError

AUTH_RESOURCE = "aiflow"
DEFAULT_TAIL = 200
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class AIFlowHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every route: JSON errors, and blocking work on the extension's worker threads."""

    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> AIFlowService:
        """The service; 503 with the reason when the extension could not reach a scheduler at start."""
        service = self.settings["aiflow_service"]
        if service is None:
            raise web.HTTPError(503, self.settings["aiflow_unavailable"])
        return service

    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking service call on a worker thread; a :class:`RequestError` becomes its HTTP status,
        a bus or database that does not answer a 503."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.settings["aiflow_executor"], method, *args)
        except RequestError as exc:
            raise web.HTTPError(exc.status, exc.message) from None
        except (EventServerUnavailableError, DatabaseUnavailableError) as exc:
            raise web.HTTPError(503, f"{exc}") from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": message}`` for every failure, also the 403 of an anonymous request."""
        message = self._reason
        exc = (kwargs.get("exc_info") or (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args  # tornado doubles a bare message's % signs
        elif status_code == 403:
            message = "not authenticated or not allowed: send the Jupyter server's token or log in"
        elif status_code >= 500:
            message = f"internal error ({type(exc).__name__}); see the Jupyter server's log"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    # --- input ---------------------------------------------------------------------------------------

    def int_argument(self, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        return bounded_int(raw, f"query parameter {name!r}", low, high)


def bounded_int(raw: str, what: str, low: int, high: int | None = None) -> int:
    """``raw`` as an integer in ``[low, high]``, else a 400 that says what was expected."""
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPError(400, f"{what} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise web.HTTPError(400, f"{what} must be {bound}, got {value}")
    return value


class WorkflowsHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"workflows": await self.call(self.service.workflows)})


class RunsHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        workflow = self.get_query_argument("workflow", None) or None
        limit = self.int_argument("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        self.reply({"runs": await self.call(self.service.runs, workflow, limit)})


class RunHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        self.reply(await self.call(self.service.run, bounded_int(run_id, "the run id", 1)))


class StopRunHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        answer = await self.call(self.service.stop_run, bounded_int(run_id, "the run id", 1))
        self.reply(answer, status=202 if answer["requested"] else 200)


class RerunHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(await self.call(self.service.rerun, bounded_int(run_id, "the run id", 1)), status=201)


class RestartJobHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str, job: str) -> None:
        self.reply(await self.call(self.service.restart_job, bounded_int(run_id, "the run id", 1), job), status=202)


class JobLogHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str, job: str) -> None:
        tail = self.int_argument("tail", DEFAULT_TAIL, 1, MAX_LOG_LINES)
        self.reply(await self.call(self.service.job_log, bounded_int(run_id, "the run id", 1), job, tail))


class EventsHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        key = self.get_query_argument("key", None) or None
        since = self.int_argument("since_version", None, 0)
        limit = self.int_argument("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        self.reply(await self.call(self.service.events, key, since, limit))


class ModelsHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"models": await self.call(self.service.models)})


class ModelVersionsHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self, model: str) -> None:
        self.reply({"model": model, "versions": await self.call(self.service.model_versions, model)})


class ModelVersionHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def patch(self, model: str, version: str) -> None:
        number = bounded_int(version, "the model version", 1)
        try:
            body = parse_json_object(self.request.body)
        except RequestError as exc:
            raise web.HTTPError(exc.status, exc.message) from None
        if set(body) != {"stage"}:
            raise web.HTTPError(400, f'the body must be {{"stage": NAME}}, got the fields {sorted(body)}')
        self.reply(await self.call(self.service.set_stage, model, number, body["stage"]))


class LineageHandler(AIFlowHandler):
    @web.authenticated
    @authorized
    async def get(self, model: str, version: str) -> None:
        self.reply(await self.call(self.service.lineage, model, bounded_int(version, "the model version", 1)))


class NotFoundHandler(AIFlowHandler):
    """Any other path under the prefix: a JSON 404 naming the routes (after authentication, so an
    anonymous caller learns nothing)."""

    @web.authenticated
    @authorized
    def get(self, *args: Any) -> None:
        raise web.HTTPError(404, f"no such route {self.request.path!r}; see docs/server_extension.md for the routes")

    post = patch = put = delete = get
