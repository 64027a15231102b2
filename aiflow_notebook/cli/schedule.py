"""``aiflow schedule add|list|pause|resume|delete`` and ``aiflow trigger list|delete``.

They talk to the scheduler of an ``aiflow server`` over the bus (the same options as ``aiflow events``:
``--url``, ``--server-key``, ``--client-key``). ``schedule add WORKFLOW`` schedules the workflow as it
was last submitted to that server (a notebook's ``af.add_workflow_schedule`` uploads its own definition).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from aiflow_notebook.cli.console import print_json, print_table
from aiflow_notebook.cli.events import client_from_args, connection_options

SCHEDULE_COLUMNS = ["id", "workflow", "timing", "paused", "next", "fired", "last_run_id"]
TRIGGER_COLUMNS = ["id", "workflow", "condition", "fired", "last_run_id"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    connection = connection_options()
    schedule = commands.add_parser("schedule", help="workflow schedules of an aiflow server (cron or interval)")
    actions = schedule.add_subparsers(title="schedule commands", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[connection], help="run a submitted workflow on a cron expression or "
                                                                "an interval")
    add.add_argument("workflow", help="a workflow submitted to this server before (its latest definition runs)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron expression, UTC (e.g. '*/5 * * * *')")
    when.add_argument("--interval", metavar="SECONDS", help="seconds, or 'D H M S'")
    when.add_argument("--expression", metavar="EXPR", help="AI Flow's 'cron@...' or 'interval@D H M S'")
    add.add_argument("--project", default=None)
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", parents=[connection], help="list schedules")
    listing.add_argument("--workflow", default=None)
    listing.set_defaults(func=_list)
    for name, what in (("pause", "stop firing"), ("resume", "fire again from the next tick"),
                       ("delete", "remove the schedule")):
        action = actions.add_parser(name, parents=[connection], help=what)
        action.add_argument("id", type=int)
        action.set_defaults(func=_change, op=f"{name}_schedule")

    trigger = commands.add_parser("trigger", help="event-triggered workflow starts of an aiflow server")
    trigger_actions = trigger.add_subparsers(title="trigger commands", metavar="ACTION", required=True)
    trigger_list = trigger_actions.add_parser("list", parents=[connection], help="list triggers")
    trigger_list.add_argument("--workflow", default=None)
    trigger_list.set_defaults(func=_list_triggers)
    trigger_delete = trigger_actions.add_parser("delete", parents=[connection], help="remove a trigger")
    trigger_delete.add_argument("id", type=int)
    trigger_delete.set_defaults(func=_change, op="delete_trigger")


def _schedules(args):
    from aiflow_notebook.scheduler.client import SchedulerClient
    from aiflow_notebook.scheduler.schedule_client import ScheduleClient

    client = client_from_args(args)
    return client, ScheduleClient(SchedulerClient(client))


def _add(args) -> None:
    from aiflow_notebook.core.timing import Timing

    timing = Timing.parse(cron=args.cron, interval=args.interval, expression=args.expression)
    client, schedules = _schedules(args)
    with client:
        row = schedules.add_schedule(args.workflow, timing, project=args.project, timeout=args.deadline)
    _show([row], args, SCHEDULE_COLUMNS)


def _list(args) -> None:
    client, schedules = _schedules(args)
    with client:
        rows = schedules.list_schedules(args.workflow, timeout=args.deadline)
    _show(rows, args, SCHEDULE_COLUMNS)


def _list_triggers(args) -> None:
    client, schedules = _schedules(args)
    with client:
        rows = schedules.list_triggers(args.workflow, timeout=args.deadline)
    _show(rows, args, TRIGGER_COLUMNS)


def _change(args) -> None:
    client, schedules = _schedules(args)
    with client:
        row = schedules.request(args.op, args.deadline, id=args.id)
    _show([row], args, SCHEDULE_COLUMNS if args.op.endswith("schedule") else TRIGGER_COLUMNS)


def _show(rows: list[dict], args, columns: list[str]) -> None:
    if args.json:
        print_json(rows)
        return
    for row in rows:
        if "next_tick" in row:
            row["next"] = datetime.fromtimestamp(row["next_tick"], UTC)
    print_table(rows, columns)
