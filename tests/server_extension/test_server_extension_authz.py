"""The routes ask the server's authorizer (resource ``aiflow``: ``read`` for GET, ``write`` for POST/PATCH),
so a deployment that lets some users only look can say so."""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyter_server.auth import Authorizer


class ReadOnlyAIFlow(Authorizer):
    """Everything, except changing anything through the aiflow API."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return not (resource == "aiflow" and action == "write")


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["ServerApp"]["authorizer_class"] = ReadOnlyAIFlow
    return jp_server_config


async def test_an_authenticated_user_without_write_permission_can_look_but_not_change(jp_fetch, jp_serverapp):
    store = jp_serverapp.web_app.settings["aiflow_service"].store
    await asyncio.to_thread(store.register_model, "ctr")
    await asyncio.to_thread(store.register_model_version, "ctr", "file:///m/1")
    response = await jp_fetch("aiflow", "api", "models", "ctr", "versions")
    assert response.code == 200
    for method, path, body in (("PATCH", ("models", "ctr", "versions", "1"), {"stage": "DEPLOYED"}),
                               ("POST", ("runs", "1", "stop"), {}),
                               ("POST", ("runs", "1", "rerun"), {}),
                               ("POST", ("runs", "1", "jobs", "serve", "restart"), {})):
        response = await jp_fetch("aiflow", "api", *path, method=method, body=json.dumps(body), raise_error=False)
        assert response.code == 403, (path, response.body)
        assert json.loads(response.body)["error"]
    assert (await asyncio.to_thread(store.get_model_version, "ctr", 1)).stage == "GENERATED"
