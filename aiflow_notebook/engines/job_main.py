"""``python -m aiflow_notebook.engines.job_main SPEC``: the entry point of every job process.

SPEC is a JSON file the scheduler writes (mode 0600): the job (as ``Job.to_dict()``; its payload is read
from the blob store, hash verified, see :mod:`~aiflow_notebook.engines.job_spec`), the workflow and run it
belongs to, the working directory, and the engine's runner (``module:function``). The runner
is imported and called with the spec; an exception becomes exit code 1 with its traceback in the log.
SIGUSR1 writes every thread's stack to the log: the scheduler sends it to a job that outlived its stop
grace period, just before SIGKILL, so the log says where the job was stuck.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import signal
import sys
import traceback

from aiflow_notebook.engines.job_spec import attach_payload, receive_secrets


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aiflow_notebook.engines.job_main SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = json.load(fh)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks into the log (see the docstring)
    receive_secrets(spec)  # first: the database password is on stdin, nowhere else
    try:
        attach_payload(spec)  # from the blob store, hash verified
    except Exception:
        traceback.print_exc()
        return 1
    os.chdir(spec.get("cwd") or os.getcwd())
    module_name, function_name = spec["runner"].split(":")
    print(f"[aiflow] job {spec['workflow']}.{spec['job']['name']} (run {spec['run_id']}, job run "
          f"{spec['job_run_id']}, attempt {spec['attempt']}) on engine {spec['job']['engine']}", flush=True)
    try:
        getattr(importlib.import_module(module_name), function_name)(spec)
    except Exception:
        traceback.print_exc()
        return 1
    print("[aiflow] job finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
