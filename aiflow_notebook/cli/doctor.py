"""``aiflow doctor``: check a configuration (Flink cluster, database, aiflow server) and say what to fix.

Each check prints one line, ``OK`` or ``FAIL`` with what was found or what to do; the exit code is 1 when
any check failed. What to check comes from the options, else from the environment a notebook uses:

==================  ========================  ============================================================
option              environment               check
==================  ========================  ============================================================
``--flink URL``     ``AIFLOW_PLATFORM``       REST reachable, Flink version, TaskManagers registered
``--db URL``        ``AIFLOW_META_URL``       database reachable, schema at the newest migration
``--server URL``    ``AIFLOW_SERVER_URL``     event bus answers with this key pair
``--server-key F``  ``AIFLOW_SERVER_KEY``     the server's public key (``server.key``)
``--client-key F``  ``AIFLOW_CLIENT_KEY``     this user's listed key pair (``NAME.key_secret``)
==================  ========================  ============================================================

With a Flink cluster, the last check runs a tiny PyFlink job on it whose Python function imports
``aiflow_notebook`` on a TaskManager and reports its version and location (``--python`` names the
interpreter the TaskManagers run, default this one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiflow_notebook.engines.flink_rest import FlinkRest, flink_address

PROBE_MARK = "AIFLOW-DOCTOR-PROBE "


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name:<12} {self.detail}"


def add_commands(commands) -> None:
    from aiflow_notebook.events.session import server_options

    doctor = commands.add_parser("doctor", help="check a configuration: Flink cluster, database, aiflow server",
                                 parents=[server_options()])
    doctor.add_argument("--flink", metavar="URL", default=None,
                        help="Flink REST address, flink://HOST:PORT or http://HOST:PORT (default: $AIFLOW_PLATFORM)")
    doctor.add_argument("--db", metavar="URL", default=None, help="metadata database URL (default: $AIFLOW_META_URL)")
    doctor.add_argument("--python", metavar="PATH", default=None,
                        help="the interpreter the TaskManagers run for Python code (default: this one)")
    doctor.add_argument("--timeout", type=float, default=10, metavar="SECONDS", help="per network check (default 10)")
    doctor.set_defaults(func=_doctor)


def _doctor(args) -> int:
    checks = run_checks(flink=args.flink or os.environ.get("AIFLOW_PLATFORM"),
                        db=args.db or os.environ.get("AIFLOW_META_URL"),
                        server=args.server or os.environ.get("AIFLOW_SERVER_URL"),
                        server_key=args.server_key or os.environ.get("AIFLOW_SERVER_KEY"),
                        client_key=args.client_key or os.environ.get("AIFLOW_CLIENT_KEY"),
                        python=args.python, timeout=args.timeout, report=lambda c: print(c.line(), flush=True))
    if not checks:
        print("nothing to check: give --flink, --db and/or --server (or set AIFLOW_PLATFORM, AIFLOW_META_URL, "
              "AIFLOW_SERVER_URL)")
        return 2
    return 0 if all(c.ok for c in checks) else 1


def run_checks(*, flink: str | None = None, db: str | None = None, server: str | None = None,
               server_key: str | None = None, client_key: str | None = None, python: str | None = None,
               timeout: float = 10, report=lambda check: None) -> list[Check]:
    """Run the checks that the given settings call for; ``report`` sees each as soon as it is done."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        report(check)

    if flink and flink != "local":
        address = flink_address(flink)
        add(check_flink(address, timeout))
        if checks[-1].ok:
            add(check_taskmanager_python(address, python or sys.executable))
        else:
            add(Check("taskmanager", False, "not checked: the Flink cluster is not reachable"))
    if db:
        add(check_database(db))
    if server:
        add(check_server(server, server_key, client_key, timeout))
    return checks


def check_flink(address: str, timeout: float) -> Check:
    rest = FlinkRest(address, timeout)
    try:
        config = rest.request("/config")
        overview = rest.request("/overview")
    except (OSError, ValueError) as exc:
        return Check("flink", False, f"no Flink REST API at http://{address} ({_reason(exc)}): start the cluster "
                                     "(bin/start-cluster.sh) or correct --flink / AIFLOW_PLATFORM (its rest.address "
                                     "and rest.port)")
    version = config.get("flink-version", "?")
    managers, free = overview.get("taskmanagers", 0), overview.get("slots-available", 0)
    if managers == 0:
        return Check("flink", False, f"Flink {version} at http://{address} has no TaskManager: start one "
                                     "(bin/taskmanager.sh start) and check its log for why it did not register")
    expected = _pyflink_version()
    note = f"; this machine's PyFlink is {expected}, use the same version on both" if expected and \
        expected != version else ""
    return Check("flink", not note, f"Flink {version} at http://{address}: {managers} TaskManager(s), "
                                    f"{free} free slot(s){note}")


def check_taskmanager_python(address: str, python: str) -> Check:
    """Run a one-element PyFlink job on the cluster whose function imports aiflow_notebook there."""
    import pyflink

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    with tempfile.TemporaryDirectory(prefix="aiflow-doctor-") as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text(PROBE_JOB)
        try:
            done = subprocess.run([str(flink), "run", "-m", address, "-pyclientexec", sys.executable,
                                   "-pyexec", python, "-py", str(script)],
                                  capture_output=True, text=True, timeout=180, cwd=tmp)
        except subprocess.TimeoutExpired:
            return Check("taskmanager", False, "the probe job did not finish in 180 s: are slots free "
                                               "(a streaming job may hold them all)?")
    found = next((line for line in done.stdout.splitlines() if line.startswith(PROBE_MARK)), None)
    if done.returncode != 0 or found is None:
        text = done.stdout + done.stderr
        missing = re.search(r"No module named '([\w.]+)'", text)
        if missing:
            return Check("taskmanager", False, f"the TaskManagers' Python ({python}) lacks module "
                                               f"{missing.group(1)!r}: pip install aiflow-notebook[flink] into it on "
                                               "every TaskManager machine, or pass --python / set python.executable")
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        return Check("taskmanager", False, f"the probe job failed (exit {done.returncode}): {tail[-400:]}")
    info = json.loads(found[len(PROBE_MARK):])
    __version__ = sys.modules["aiflow_notebook"].__version__  # the root is loaded with any submodule
    same = info["version"] == __version__
    detail = (f"aiflow_notebook {info['version']} at {info['path']} (python {info['python']}, host {info['host']})"
              + ("" if same else f"; this side has {__version__}: install the same version on the TaskManagers"))
    return Check("taskmanager", same, detail)


def check_database(url: str) -> Check:
    from aiflow_notebook.storage.database import Database, head_revision, safe_url

    try:
        database = Database(url)
    except Exception as exc:  # noqa: BLE001 - any failure to even parse/open the URL is the finding
        return Check("database", False, f"cannot use {url!r}: {_reason(exc)}")
    shown = safe_url(database.url)
    try:
        current = database.current_revision()
    except Exception as exc:  # noqa: BLE001
        return Check("database", False, f"cannot connect to {shown}: {_reason(exc)}; check the host, port, user "
                                         "and password in the URL, and that the server runs")
    finally:
        database.dispose()
    head = head_revision()
    if current == head:
        return Check("database", True, f"{shown} reachable, schema at the newest migration ({head})")
    return Check("database", False, f"{shown} is reachable but its schema is at {current or 'nothing (empty)'}, "
                                    f"not {head}: run `aiflow db upgrade --db URL` (or start `aiflow server` on it once)")


def check_server(url: str, server_key: str | None, client_key: str | None, timeout: float) -> Check:
    from aiflow_notebook.events import EventClient

    if client_key and not server_key:
        return Check("server", False, "a client key without the server's public key: give --server-key server.key")
    try:
        auth = (server_key, client_key) if server_key and client_key else server_key
        with EventClient(url, auth=auth, deadline=timeout) as client:
            version = client.latest_version()
    except Exception as exc:  # noqa: BLE001 - unreachable, refused key, bad key file: all are findings
        hint = ("the server is down, or it does not admit this key pair (is your NAME.key listed in the server's "
                "DIR/clients/? is --server-key the server's server.key?)" if server_key else
                "the server is down or requires CURVE (give --server-key and --client-key)")
        return Check("server", False, f"no answer from {url}: {_reason(exc)}; {hint}")
    keys = "with this key pair" if server_key else "without CURVE"
    return Check("server", True, f"{url} answers {keys} (latest event version {version})")


PROBE_JOB = """\
import json, socket, sys
from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment


def probe(_):
    import socket, sys
    import aiflow_notebook
    return json.dumps({"version": aiflow_notebook.__version__, "path": aiflow_notebook.__file__,
                       "python": sys.executable, "host": socket.gethostname()})


env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(1)
stream = env.from_collection([0], type_info=Types.INT()).map(probe, output_type=Types.STRING())
with stream.execute_and_collect("aiflow doctor probe") as results:
    for line in results:
        print("AIFLOW-DOCTOR-PROBE " + line, flush=True)
"""


def _pyflink_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("apache-flink")
    except Exception:  # noqa: BLE001
        return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
