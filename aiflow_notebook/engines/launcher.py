"""``python aiflow_notebook/engines/launcher.py STATUS_FILE -- CMD...``: run CMD, record how it ended.

The launcher is the leader of the job's process group. It forwards SIGTERM/SIGINT to the job, waits,
and writes ``{"returncode": N, "signal": S}`` to STATUS_FILE atomically, so whoever supervises the job —
the scheduler that started it, or one restarted after a crash — can learn the outcome.

It imports the standard library only, and is run by path: it starts before every job, and importing
``aiflow_notebook`` (even just ``core.files``, whose ``write_atomic`` it mirrors in :func:`_write_status`)
costs about 90 ms of CPU a job — measured as 1.7× the wall time of ten concurrent 20-job chains on two
cores (bench/scheduler_bench.py, docs/benchmarks.md). tests/test_layers.py allows this one copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python launcher.py STATUS_FILE -- CMD [ARGS...]", file=sys.stderr)
        return 2
    status_file, command = argv[0], argv[2:]
    child = subprocess.Popen(command)

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    _write_status(status_file, {"returncode": code, "signal": -code if code < 0 else None})
    return 0 if code == 0 else 1


def _write_status(path: str, status: dict) -> None:
    """``core.files.write_atomic`` in the standard library only: beside it, flushed to disk, renamed over it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        json.dump(status, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
