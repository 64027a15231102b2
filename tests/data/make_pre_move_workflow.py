"""Writes ``pre_move_workflow.json``: a compiled workflow saved by the code *before* the round-3 layout move
(commit 4fcfa97), so that ``tests/test_moved_modules.py`` can check that what was saved then still loads.

It runs as ``__main__``, as a notebook does, so cloudpickle takes the condition class and the node function
by value and our own names (``aiflow_notebook.conditions.Condition``, ...) by reference: the old module
paths that the move must keep answering. Kept for the record; re-running it after the move would save the
new paths, which is not what the test needs.

    python tests/data/make_pre_move_workflow.py tests/data/pre_move_workflow.json
"""

import sys
from pathlib import Path

from aiflow_notebook.graph_errors import InvalidArgumentError

import aiflow_notebook as af


class EveryThird(af.Condition):
    """Met on every third matching event; the count is the condition's value state."""

    def is_met(self, event, context):
        count = context.get_state(af.ValueStateDescriptor("count"))
        seen = (count.value() or 0) + 1
        count.update(seen)
        return seen % 3 == 0


def total(rows, context):
    if not rows:
        raise InvalidArgumentError("no rows")  # names a moved module inside the pickled function
    return {"job": context.job, "sum": sum(int(v) for row in rows for v in row)}


if __name__ == "__main__":
    with af.workflow("pre_move", project="compat"):
        with af.job_config("prep"):
            summed = af.transform(af.read_dataset("numbers", uri="numbers.csv"), total, name="total")
            af.write_dataset(summed, "sums", uri="sums.json")
        with af.job_config("serve"):
            af.user_define_operation(total, name="serve_total", output_num=0)
        af.action_on_job_status("serve", upstream="prep")
        af.action_on_condition("serve", EveryThird(keys="ctr"), action="RESTART")
    Path(sys.argv[1]).write_bytes(af.compile("pre_move").to_bytes())
