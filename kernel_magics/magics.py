"""``%%aiflow`` / ``%aiflow``: the notebook face of the SDK (DESIGN §4.5).

Thin over ``aiflow_notebook``: each subcommand parses its line with IPython's ``magic_arguments`` (which
also writes the help that ``%aiflow?`` shows) and calls the SDK.

- ``%%aiflow job NAME [options]`` runs the cell body as ordinary Python, in the user's namespace, inside
  ``af.job_config(NAME, ...)``; it first forgets what the previous run of the same cell defined, so
  re-running a cell replaces its block; then it shows the split graph with the job highlighted.
- A bad line, or an ``AIFlowError`` from the body, prints one paragraph (what was wrong, the valid form)
  and leaves the graph as it was. Other exceptions are the user's code failing: the graph is restored
  and the traceback shown as usual. When the body ran but the workflow as a whole does not compile
  (say, a data edge into another job), the cell's definitions are kept, as a saved file with an error
  is, and the problem is printed as one paragraph; fixing and re-running the cell replaces them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

import aiflow_notebook as af
import aiflow_notebook.sdk.graph as _graph
from aiflow_notebook.core.engine_names import is_known_engine, known_engines

# -- one parser per subcommand; magic_arguments turns each into generated help -----------------------------

@magic_arguments("%aiflow job")
@argument("name", metavar="NAME", help="the job's name (letters, digits, '_' and '-')")
@argument("--engine", metavar="E", help=f"engine to run the job on: {', '.join(known_engines())} "
          f"(default: inherited from af.global_config, else python)")
@argument("--parallelism", metavar="N", type=int, help="parallelism of the job (default 1)")
@argument("--platform", metavar="P", help="where it runs (default local)")
@argument("--streaming", action="store_true", default=None, help="the job is a streaming job (runs until stopped)")
@argument("--workers", metavar="N", type=int, help="number of workers (property 'workers', for pytorch/tensorflow)")
@argument("--ps", metavar="N", type=int, help="number of parameter servers (property 'ps', for tensorflow)")
@argument("--property", metavar="K=V", action="append", default=[], dest="properties",
          help="a job property (repeatable); V is read as JSON when it parses, else as a string")
@argument("--periodic", metavar="EXPR", default=None,
          help="rerun the job at every tick while its run lives: 'cron@*/5 * * * *', 'interval@0 0 1 0' or seconds")
def _job_help(line: str) -> None:
    """Cell magic: run the cell body as ordinary Python inside job NAME's execution block, then show the
    split graph with the job highlighted. Re-running the cell replaces the job's block."""


@magic_arguments("aiflow workflow")
@argument("name", metavar="NAME", help="the workflow's name")
@argument("--project", metavar="P", help="its project (default: 'default', or unchanged when it exists)")
def _workflow_help(line: str) -> None:
    """Select (creating it the first time) the workflow that the following job cells define."""


@magic_arguments("aiflow show")
@argument("name", metavar="WORKFLOW", nargs="?", help="a workflow (default: the current one)")
@argument("--highlight", metavar="JOB", help="outline this job")
def _show_help(line: str) -> None:
    """Compile the workflow and show its split graph: jobs as clusters, data edges solid, control
    edges dashed."""


@magic_arguments("aiflow reset")
@argument("--all", action="store_true", help="forget every workflow of this session, not just the current one")
def _reset_help(line: str) -> None:
    """Forget the current workflow's jobs, nodes and control edges."""


@magic_arguments("aiflow submit")
@argument("name", metavar="WORKFLOW", nargs="?", help="a workflow (default: the current one)")
@argument("--wait", action="store_true", help="block until the run ends, updating the graph's job colours")
@argument("--timeout", metavar="S", type=float, default=None, help="with --wait: give up waiting after S seconds")
def _submit_help(line: str) -> None:
    """Compile the workflow and run it: on the embedded scheduler (started on first use), or on the server
    chosen with %aiflow connect. Shows the graph coloured by job status."""


@magic_arguments("aiflow status")
@argument("name", metavar="RUN", nargs="?",
          help="a run id, or a workflow submitted in this session for its last run (default: the last run)")
def _status_help(line: str) -> None:
    """Show a run in a live panel: each job's state, attempts, duration, progress and log tail, with
    stop / restart-job / re-run buttons."""


@magic_arguments("aiflow stop")
@argument("name", metavar="WORKFLOW", nargs="?", help="a workflow submitted in this session (default: the last)")
def _stop_help(line: str) -> None:
    """Stop every job of the last run of a workflow (streaming jobs included)."""


@magic_arguments("aiflow connect")
@argument("url", metavar="URL", help="the aiflow server, e.g. tcp://host:PORT ('embedded' to go back)")
@argument("--key", metavar="PATH", default=None, help="the server's CURVE public key file (server.key)")
@argument("--client-key", metavar="PATH", default=None,
          help="this kernel's listed CURVE key, NAME.key_secret (default: $AIFLOW_EVENT_CLIENT_KEY)")
def _connect_help(line: str) -> None:
    """Make a remote `aiflow server start` this kernel's one source of truth: submissions (payloads uploaded),
    model center, datasets, lineage, events, run status and panels all go to it."""


@magic_arguments("aiflow disconnect")
def _disconnect_help(line: str) -> None:
    """Go back to the embedded scheduler and the local store."""


@magic_arguments("aiflow server")
@argument("action", metavar="ACTION", nargs="?", default="status", choices=["start", "stop", "status"],
          help="start, stop or status (default status)")
@argument("--db", metavar="URL", default=None,
          help="the server's database (default: sqlite under $AIFLOW_HOME/server)")
def _server_help(line: str) -> None:
    """Start, stop or show this kernel's local aiflow server (event bus + scheduler + metadata store in a
    process of its own, on a private unix socket; state in $AIFLOW_HOME/server). Start connects this kernel
    to it, so other notebooks and terminals can share it (%aiflow connect URL); stop disconnects and ends it,
    as does the kernel's exit."""


@magic_arguments("aiflow lineage")
@argument("model", metavar="MODEL[:VERSION]", help="a registered model, optionally one of its versions (ctr:2)")
@argument("--version", metavar="N", type=int, default=None, help="one version (default: all)")
def _lineage_help(line: str) -> None:
    """Draw where a model came from and who uses it: dataset -> job run -> model version -> serving job
    (a live widget: pick a node to see its details)."""


@magic_arguments("aiflow events")
@argument("--key", metavar="K", default=None, help="only events with this key (default: all)")
@argument("--type", metavar="T", default=None, dest="event_type", help="only events of this type (default: all)")
@argument("--limit", metavar="N", type=int, default=50, help="show the newest N events (default 50)")
def _events_help(line: str) -> None:
    """Open the live event panel: the newest events on the bus, newest first."""


@magic_arguments("aiflow models")
@argument("model", metavar="MODEL", nargs="?", help="one model (default: every model)")
def _models_help(line: str) -> None:
    """Open the model panel: versions, stages and metrics, live, with Validate / Deploy / Deprecate buttons
    (each publishes MODEL_<STAGE>, as af.update_model_version does)."""


@magic_arguments("aiflow help")
def _help_help(line: str) -> None:
    """Show this help."""


SUBCOMMANDS: dict[str, Callable[..., Any]] = {"job": _job_help, "workflow": _workflow_help, "show": _show_help,
                                              "reset": _reset_help, "submit": _submit_help, "status": _status_help,
                                              "stop": _stop_help, "connect": _connect_help,
                                              "disconnect": _disconnect_help, "server": _server_help,
                                              "lineage": _lineage_help, "events": _events_help,
                                              "models": _models_help, "help": _help_help}
for _command in SUBCOMMANDS.values():
    _command.parser.allow_abbrev = False  # "--engin" is a typo to report, not an abbreviation to guess


def usage(command: str) -> str:
    """One line: the valid form of a subcommand, e.g. ``%%aiflow job NAME [--engine E] ...``."""
    text = SUBCOMMANDS[command].parser.format_usage().replace("::", "").strip()
    return " ".join(text.split())


def help_text() -> str:
    parts = ["Define event-driven ML workflows in notebook cells (aiflow-notebook).",
             "Usage: %aiflow COMMAND [options], or %%aiflow job NAME [options] on the first line of a cell.",
             *(SUBCOMMANDS[name].__doc__ or "" for name in SUBCOMMANDS),
             "The same program without magics is plain Python: import aiflow_notebook as af; "
             "with af.job_config(...): ..."]
    return "\n\n".join(part.strip() for part in parts)


@magics_class
class AIFlowMagics(Magics):
    """The ``aiflow`` line and cell magic."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self._cell_id: str | None = None
        self._cell_jobs: dict[str, tuple[str, str]] = {}  # cell id → (workflow, job) it defined last

    def remember_cell(self, info: Any) -> None:
        """``pre_run_cell`` hook: the id of the cell being run, to notice a job cell renamed in place."""
        self._cell_id = getattr(info, "cell_id", None)

    @line_cell_magic
    def aiflow(self, line: str, cell: str | None = None) -> None:
        __tracebackhide__ = True  # a failing cell body shows the user's frames, not ours
        command, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        try:
            if command in ("", "help"):
                print(help_text())
            elif command not in SUBCOMMANDS:
                raise _Refused(f"unknown command {command!r}", "%aiflow COMMAND, where COMMAND is one of "
                               f"{', '.join(SUBCOMMANDS)}")
            elif command == "job":
                self._job(rest, cell)
            elif cell is not None:
                raise _Refused(f"%%aiflow {command} is not a cell magic (only %%aiflow job takes a cell)",
                               usage(command))
            else:
                getattr(self, f"_{command}")(self._parse(command, rest))
        except _Refused as refused:
            _say(refused.paragraph())

    aiflow.__doc__ = help_text()

    # -- subcommands ----------------------------------------------------------------------------------------

    def _job(self, rest: str, cell: str | None) -> None:
        __tracebackhide__ = True
        args = self._parse("job", rest)
        if cell is None:
            raise _Refused("%aiflow job needs a cell body: put it on the first line of a cell, as %%aiflow job",
                           usage("job"))
        settings = _job_settings(args)
        graph = _graph.current_graph()
        before = graph.snapshot()
        origin = f"%%aiflow job {args.name}"
        previous = self._cell_jobs.get(self._cell_id or "")
        if previous and previous[0] == graph.name and previous[1] != args.name:  # the cell's job was renamed
            graph.drop_origin(f"%%aiflow job {previous[1]}")
            graph.drop_job(previous[1])
        graph.drop_origin(origin)
        graph.drop_job(args.name)
        # line numbers in errors and tracebacks count as in the cell: the magic line, then the blank lines
        # that transform_cell drops
        blank = next((i for i, text in enumerate(cell.splitlines()) if text.strip()), 0)
        code = "\n" * (1 + blank) + self.shell.transform_cell(cell)
        filename = self.shell.compile.cache(code, self.shell.execution_count, raw_code=cell)
        try:
            with _graph.defining(origin, filename, origin), af.job_config(args.name, **settings):
                graph.jobs[args.name].location = f"{origin}, line 1"
                exec(self.shell.compile(code, filename, "exec"), self.shell.user_global_ns, self.shell.user_ns)
        except af.AIFlowError as err:
            graph.restore(before)
            raise _Refused(f"job {args.name!r} was not changed: {err}", None) from None
        except BaseException:
            graph.restore(before)
            raise
        if self._cell_id:
            self._cell_jobs[self._cell_id] = (graph.name, args.name)
        self._display(graph, highlight=args.name)

    def _workflow(self, args: Any) -> None:
        graph = self._sdk(lambda: af.workflow(args.name, project=args.project))
        print(f"workflow {graph.name!r} (project {graph.project!r}) selected: {len(graph.jobs)} jobs, "
              f"{len(graph.nodes)} nodes, {len(graph.control_edges)} control edges")

    def _show(self, args: Any) -> None:
        graph = self._sdk(lambda: _graph.get_workflow(args.name) if args.name else _graph.current_graph())
        if args.highlight and args.highlight not in graph.jobs:
            raise _Refused(f"workflow {graph.name!r} has no job {args.highlight!r} to highlight "
                           f"(jobs: {', '.join(graph.jobs) or 'none'})", usage("show"))
        self._display(graph, highlight=args.highlight)

    def _reset(self, args: Any) -> None:
        if args.all:
            _graph.clear_session()
            self._cell_jobs.clear()
            print("forgot every workflow of this session")
            return
        graph = _graph.current_graph()
        graph.reset()
        self._cell_jobs = {cell: job for cell, job in self._cell_jobs.items() if job[0] != graph.name}
        print(f"workflow {graph.name!r} is empty again (no jobs, nodes or control edges)")

    def _submit(self, args: Any) -> None:
        from aiflow_notebook.widgets import GraphWidget

        run = self._sdk(lambda: af.submit(args.name))
        print(f"submitted {run.workflow.name!r}: run {run.run_id}")
        display(GraphWidget(run))  # colours follow the run live, from the panel's own threads
        if not args.wait:
            return
        try:
            status = run.wait(args.timeout)
        except TimeoutError:
            print(f"run {run.run_id} is still {run.status()} after {args.timeout:g} s; %aiflow status shows it later")
            return
        self._report(run, status)

    def _status(self, args: Any) -> None:
        from aiflow_notebook.widgets import RunPanel

        run = self._run_of(args.name, "status")
        display(RunPanel(run))
        self._report(run, run.status())

    def _events(self, args: Any) -> None:
        from aiflow_notebook.widgets import EventPanel

        if args.limit < 1:
            raise _Refused(f"--limit must be at least 1, got {args.limit}", usage("events"))
        display(self._sdk(lambda: EventPanel(key=args.key, event_type=args.event_type, limit=args.limit)))

    def _models(self, args: Any) -> None:
        from aiflow_notebook.widgets import ModelPanel

        if args.model is not None:
            self._sdk(lambda: af.default_store().get_model(args.model))  # an unknown model: one paragraph
        display(self._sdk(lambda: ModelPanel(args.model)))

    def _stop(self, args: Any) -> None:
        run = self._run_of(args.name, "stop")
        status = self._sdk(run.stop)
        print(f"run {run.run_id} of {run.workflow.name!r}: {status}")

    def _connect(self, args: Any) -> None:
        if args.url == "embedded":
            self._disconnect(args)
            return
        auth = (args.key, args.client_key) if args.key and args.client_key else args.key
        self._sdk(lambda: af.connect(args.url, auth=auth))
        print(f"connected: submissions, models, datasets, lineage, events and runs go to the aiflow server at "
              f"{args.url}")

    def _disconnect(self, args: Any) -> None:
        af.disconnect()
        print("disconnected: the embedded scheduler and the local store are used again")

    def _server(self, args: Any) -> None:
        from aiflow_notebook.session import local_server

        if args.action == "start":
            server = self._sdk(lambda: local_server.start_local_server(args.db))
            print(f"{server.describe()}\nstop it with %aiflow server stop")
        elif args.action == "stop":
            server = local_server.stop_local_server()
            print("no local aiflow server was started in this kernel" if server is None else
                  f"stopped the local aiflow server at {server.url}; the embedded scheduler and the local store "
                  "are used again")
        else:
            server = local_server.local_server()
            print("no local aiflow server (start one with %aiflow server start)" if server is None
                  else server.describe())

    def _lineage(self, args: Any) -> None:
        from aiflow_notebook.widgets import LineageWidget

        model, sep, version = args.model.partition(":")
        if sep and not version.isdigit():
            raise _Refused(f"the version after {model + ':'!r} must be a number, got {version!r}", usage("lineage"))
        version = int(version) if sep else args.version
        display(self._sdk(lambda: LineageWidget(model, version)))

    def _run_of(self, name: str | None, command: str) -> Any:
        """A run of this session (``%aiflow submit`` or ``af.submit``): by id, the last of a workflow, or the
        last one."""
        from aiflow_notebook.session.submit import session_runs

        runs = session_runs()
        if name is not None and name.isdigit():
            if int(name) not in runs:
                raise _Refused(f"no run {name} was submitted in this session (runs: "
                               f"{', '.join(map(str, runs)) or 'none'})", usage(command))
            return runs[int(name)]
        found = [run for run in runs.values() if name is None or run.workflow.name == name]
        if not found:
            raise _Refused(f"no run of {name or 'any workflow'} was submitted in this session", usage("submit")
                           if command == "status" else usage(command))
        return found[-1]

    @staticmethod
    def _report(run: Any, status: str) -> None:
        print(f"run {run.run_id} of {run.workflow.name!r}: {status}; jobs: "
              + ", ".join(f"{job} {state}" for job, state in run.jobs().items()))
        for job, error in run.errors().items():
            print(f"job {job!r} failed: {error}")

    # -- helpers ------------------------------------------------------------------------------------------

    def _parse(self, command: str, rest: str) -> Any:
        try:
            return parse_argstring(SUBCOMMANDS[command], rest)
        except UsageError as err:
            raise _Refused(str(err), usage(command)) from None
        except ValueError as err:  # unbalanced quotes
            raise _Refused(f"cannot split the line: {err}", usage(command)) from None

    def _sdk(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except af.AIFlowError as err:
            raise _Refused(str(err), None) from None

    def _display(self, graph: _graph.AIGraph, highlight: str | None) -> None:
        try:
            workflow = af.compile(graph)
        except af.AIFlowError as err:
            raise _Refused(f"workflow {graph.name!r} does not compile yet (the cell's definitions are kept; fix "
                           f"and re-run it, or %aiflow reset): {err}", None) from None
        display(workflow.view(highlight=highlight))


class _Refused(Exception):
    """A magic line or an SDK call refused: printed as one paragraph, never as a traceback."""

    def __init__(self, problem: str, valid_form: str | None):
        super().__init__(problem)
        self.problem, self.valid_form = problem, valid_form

    def paragraph(self) -> str:
        text = f"aiflow: {self.problem.rstrip('.')}."
        if self.valid_form:
            text += f" Valid form: {self.valid_form}. See %aiflow? for help."
        return " ".join(text.split())


def _job_settings(args: Any) -> dict[str, Any]:
    """Check the options of ``%%aiflow job`` and turn them into ``af.job_config`` keyword arguments."""
    problems = []
    if args.engine is not None and not is_known_engine(args.engine):
        problems.append(f"unknown engine {args.engine!r} (known: {', '.join(known_engines())})")
    for option in ("parallelism", "workers", "ps"):
        value = getattr(args, option)
        if value is not None and value < 1:
            problems.append(f"--{option} must be at least 1, got {value}")
    properties: dict[str, Any] = {}
    for item in args.properties:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--property needs KEY=VALUE, got {item!r}")
            continue
        properties[key.strip()] = _property_value(value)
    for option in ("workers", "ps"):
        if getattr(args, option) is not None:
            properties[option] = getattr(args, option)
    try:
        _graph.check_name(args.name, "job")
    except af.AIFlowError as err:
        problems.append(str(err))
    periodic = None
    if args.periodic is not None:
        from aiflow_notebook.core.timing import Timing

        text = args.periodic.strip().strip("'\"")
        try:
            periodic = Timing.coerce(float(text) if _is_number(text) else text).to_dict()
        except af.AIFlowError as err:
            problems.append(f"--periodic: {err}")
    if problems:
        raise _Refused("; ".join(problems), usage("job"))
    return {"engine": args.engine, "parallelism": args.parallelism, "platform": args.platform,
            "streaming": args.streaming, "properties": properties or None, "periodic": periodic}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _property_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _say(paragraph: str) -> None:
    print(paragraph, file=sys.stderr)


__all__ = ["AIFlowMagics", "help_text", "usage"]
