"""The PyFlink execution environment a job's program is built in, for every engine that runs on Flink.

The flink engine (``flink_job``) adds the job's operators to it, the pytorch and tensorflow engines
(``dl_job``) a ``dl_on_flink`` cluster; both build it here, in the job process (the local mini-cluster) or in
the client of ``flink run`` (a standalone cluster, ``flink_remote``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

FLINK_PROPERTY_PREFIX = "flink."


def new_environment(spec: dict[str, Any], extra: dict[str, str] | None = None):
    """A local execution environment for the job: its Python workers run this interpreter. The job's
    ``flink.*`` properties are Flink settings (:func:`flink_settings`); ``extra``: more of them (e.g. the
    savepoint a streaming job resumes from)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)  # else workers run `python` from PATH
    for key, value in {**flink_settings(spec["job"].get("properties")), **(extra or {})}.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(int(spec["job"].get("parallelism") or 1))
    return env


def flink_settings(properties: dict[str, Any] | None) -> dict[str, str]:
    """Job properties named ``flink.<option>`` are Flink configuration options for the job's program, as
    in Flink's own config file: ``properties={"flink.python.execution-mode": "thread"}`` (or the magic's
    ``--property flink.python.execution-mode=thread``) runs its Python functions inside Flink's JVM, which
    saves the per-row hand-over to a separate Python worker. That embedded interpreter is told this
    process's import path (``python.pythonpath``), or it would not find the packages of this virtualenv."""
    settings = {key[len(FLINK_PROPERTY_PREFIX):]: str(value) for key, value in (properties or {}).items()
                if key.startswith(FLINK_PROPERTY_PREFIX)}
    if settings.get("python.execution-mode") == "thread" and "python.pythonpath" not in settings:
        # sys.path, and where this package lives: an editable install is found through a .pth hook that the
        # embedded interpreter does not run
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [path for path in sys.path if path and Path(path).is_dir()]
        settings["python.pythonpath"] = os.pathsep.join(dict.fromkeys([*paths, package_root]))
    return settings


def program_name(spec: dict[str, Any]) -> str:
    """The Flink job's name, ``<workflow>.<job>``: how Flink's web UI and REST API list it."""
    return f"{spec['workflow']}.{spec['job']['name']}"
