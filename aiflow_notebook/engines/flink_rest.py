"""A Flink cluster's REST API: its address, the job states it reports, and the one client that asks it.

Jobs on a standalone cluster (``platform="flink://HOST:PORT"``, ``flink_remote``), the throw-away cluster of
the tests and the demo (``sandbox.flink_cluster``) and ``aiflow doctor`` all talk to Flink through
:class:`FlinkRest`. Flink's job states (:class:`FlinkJobState`) are Flink's words, not ours
(``core.vocabulary.JobState``): a Flink job that was CANCELED is an aiflow job that was KILLED.
"""

from __future__ import annotations

import json
import re
import urllib.request
from enum import StrEnum
from typing import Any

REMOTE_PREFIX = "flink://"
"""A job's platform ``flink://HOST:PORT`` runs it on the cluster whose REST API answers at ``HOST:PORT``."""


class FlinkJobState(StrEnum):
    """A job's ``state`` as Flink reports it (``GET /jobs/<id>``, ``GET /jobs/overview``)."""

    INITIALIZING = "INITIALIZING"
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    FAILING = "FAILING"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELED = "CANCELED"
    FINISHED = "FINISHED"
    RESTARTING = "RESTARTING"
    SUSPENDED = "SUSPENDED"
    RECONCILING = "RECONCILING"


ENDED_STATES = (FlinkJobState.FINISHED, FlinkJobState.FAILED, FlinkJobState.CANCELED)
"""A Flink job in one of these has ended for good: nothing is left to cancel."""


def flink_address(url: str) -> str:
    """``HOST:PORT`` from ``flink://HOST:PORT``, ``http://HOST:PORT`` or ``HOST:PORT``."""
    return re.sub(r"^(flink|https?)://", "", url).rstrip("/")


def cluster_address(platform: str | None) -> str | None:
    """The REST address of a job's platform ``flink://HOST:PORT``; None for any other platform (``local``)."""
    if platform and platform.startswith(REMOTE_PREFIX):
        return flink_address(platform)
    return None


class FlinkRest:
    """The REST API of the cluster at ``address`` (``HOST:PORT``); ``timeout``: seconds per request."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address, self.timeout = address, timeout

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def request(self, path: str, method: str = "GET", body: dict[str, Any] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """The JSON answer of ``method path`` (``{}`` for an empty one); an unreachable cluster or an error
        status raises ``OSError`` (``urllib.error.URLError``/``HTTPError``)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=self.timeout if timeout is None else timeout) as response:
            answer = response.read()
        return json.loads(answer) if answer else {}

    def job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Flink's record of one job: its ``state``, ``vertices``, ``timestamps``..."""
        return self.request(f"/jobs/{job_id}", timeout=timeout)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows (``jid``, ``name``, ``state``, ``start-time``...)."""
        return self.request("/jobs/overview").get("jobs", [])

    def cancel(self, job_id: str, timeout: float | None = None) -> None:
        """Ask the cluster to cancel the job (it answers at once; the job ends CANCELED soon after)."""
        self.request(f"/jobs/{job_id}?mode=cancel", "PATCH", timeout=timeout)
