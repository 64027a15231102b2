"""``flink run -pym aiflow_notebook.engines.flink_main SPEC``: the client side of a job on a Flink cluster.

A job process whose platform is ``flink://HOST:PORT`` submits this module with ``flink run -d``
(``flink_remote``). It runs in Flink's client process, builds the program for the job's engine from the
spec (the flink engine's operators, or the pytorch and tensorflow engines' ``dl_on_flink`` cluster) and
hands it to the cluster. An entry of its own, as ``job_main`` is for job processes: it imports every
engine that runs on Flink, and none of them imports it.
"""

from __future__ import annotations

import sys

from aiflow_notebook.engines import dl_job, flink_job
from aiflow_notebook.engines.flink_environment import program_name
from aiflow_notebook.engines.job_spec import read_spec


def main(argv: list[str]) -> None:
    """Build the program of the job whose spec is ``argv[0]`` and execute it on the cluster."""
    spec = read_spec(argv[0])
    engine = spec["job"].get("engine")
    if engine in dl_job.ENGINES:
        from dl_on_flink.framework.address_book import BusAddressBook

        env = dl_job.build_program(spec, engine, address_book=BusAddressBook.from_environment())
    else:
        env = flink_job.build_environment(spec)
    env.execute(program_name(spec))


if __name__ == "__main__":
    main(sys.argv[1:])
