"""The bash engine: the job's ``command`` property runs in ``bash -c`` (its exit code is the job's)."""

from __future__ import annotations

import subprocess
import sys

from aiflow_notebook.core.errors import AIFlowError


def run_job(spec: dict) -> None:
    command = (spec["job"].get("properties") or {}).get("command")
    if not command:
        raise AIFlowError(f"bash job {spec['job']['name']!r} has no command; set properties={{'command': '...'}}")
    code = subprocess.run(["bash", "-c", command]).returncode
    if code != 0:
        sys.exit(code)
