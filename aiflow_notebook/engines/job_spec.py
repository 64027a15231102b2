"""Reading a job's spec file, and what the scheduler hands a job besides it.

The spec names the job's payload by the workflow's blob URI instead of carrying it: the payload is read
from the scheduler's blob store and its content hash verified before anything is unpickled (a blob
altered after the submission makes the job fail, naming the URI). Secrets never go into the spec or the
environment: the database password comes on the job's stdin, once (:func:`receive_secrets`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def read_spec(path: str) -> dict[str, Any]:
    """The spec at ``path``, with ``spec["job"]["payload"]`` filled in from the verified blob."""
    with open(path) as fh:
        spec = json.load(fh)
    attach_payload(spec)
    return spec


def attach_payload(spec: dict[str, Any]) -> None:
    """Fill in ``spec["job"]["payload"]`` from the blob the spec names (verified against its hash)."""
    if "payload" not in spec["job"] and spec.get("workflow_uri"):
        from aiflow_notebook.sdk.workflow import Workflow
        from aiflow_notebook.storage.blobs import LocalBlobStore

        workflow = Workflow.from_bytes(LocalBlobStore(spec["blob_root"]).get(spec["workflow_uri"]))
        job = workflow.jobs.get(spec["job"]["name"])
        if job is None:
            from aiflow_notebook.core.errors import AIFlowError

            raise AIFlowError(f"the workflow at {spec['workflow_uri']} has no job {spec['job']['name']!r}")
        spec["job"]["payload"] = job.to_dict(include_payload=True)["payload"]


def receive_secrets(spec: dict[str, Any]) -> None:
    """Read what the scheduler wrote on stdin (when the spec says so), keep it in memory, close stdin.

    stdin is then ``/dev/null``, so neither the job's code nor its children can read the secrets again.
    """
    if spec.get("secrets") != "stdin":
        return
    data = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    secrets = json.loads(data or b"{}")
    public = os.environ.get("AIFLOW_META_URL")
    if public and secrets.get("meta_url"):
        from aiflow_notebook.core.config import remember_meta_url

        remember_meta_url(public, secrets["meta_url"])
