"""``python -m aiflow_notebook.engines.job_main SPEC``: the entry point of every job process.

SPEC is a JSON file the scheduler writes (mode 0600): the job (as ``Job.to_dict()``; its payload is read
from the blob store, hash verified, see :mod:`~aiflow_notebook.engines.job_spec`), the workflow and run it
belongs to, the working directory, and the engine's runner (``module:function``). The runner
is imported and called with the spec; an exception becomes exit code 1 with its traceback in the log.
SIGUSR1 writes every thread's stack to the log: the scheduler sends it to a job that outlived its stop
grace period, just before SIGKILL, so the log says where the job was stuck.

Our own packages are imported first, from their installation, whatever the working directory holds: a
job runs in its notebook's folder, which is first on ``sys.path``, and a folder there named like one of
our packages (``AIFLOW_HOME`` held ``dl_on_flink/`` state) is a namespace package to Python's path finder.
With an editable install, whose finder runs after the path finder, that empty namespace won, wherever on
the path the folder was. Once imported, the packages are what every later ``import`` gets; the path is
then as it was, so the job's code still imports its own modules from its folder.
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

FIRST_IMPORTS = ("aiflow_notebook", "dl_on_flink")  # our packages a job may import (kernel_magics: kernels)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aiflow_notebook.engines.job_main SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = json.load(fh)
    import_our_packages()
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


def import_our_packages() -> None:
    """Import :data:`FIRST_IMPORTS` with no entry on ``sys.path`` that could pass for one of them (see the
    module docstring), then put the path back as it was."""
    saved = list(sys.path)
    sys.path[:] = [entry for entry in saved if not _may_shadow_ours(entry)]
    try:
        for name in FIRST_IMPORTS:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:  # not installed here: nothing of it to shadow
                if exc.name != name:
                    raise
    finally:
        sys.path[:] = saved


def _may_shadow_ours(entry: str) -> bool:
    """Whether ``entry`` is the working directory, or holds a folder named like one of our packages that
    is no package of ours (no ``__init__.py``: a namespace portion)."""
    folder = entry or os.curdir
    if os.path.realpath(folder) == os.path.realpath(os.curdir):
        return True
    return any(os.path.isdir(os.path.join(folder, name)) and not os.path.isfile(os.path.join(folder, name, "__init__.py"))
               for name in FIRST_IMPORTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
