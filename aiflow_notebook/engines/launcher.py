"""``python -m aiflow_notebook.engines.launcher STATUS_FILE -- CMD...``: run CMD, record how it ended.

The launcher is the leader of the job's process group. It forwards SIGTERM/SIGINT to the job, waits,
and writes ``{"returncode": N, "signal": S}`` to STATUS_FILE atomically (``core.files.write_atomic``), so
whoever supervises the job — the scheduler that started it, or one restarted after a crash — can learn the
outcome. Kept free of heavy imports: it is on the critical path of every job start, and it imports even
that one function only once the job has started, while the job starts up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m aiflow_notebook.engines.launcher STATUS_FILE -- CMD [ARGS...]", file=sys.stderr)
        return 2
    status_file, command = argv[0], argv[2:]
    child = subprocess.Popen(command)

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    from aiflow_notebook.core.files import write_atomic  # not before the job runs: see the docstring

    code = child.wait()
    write_atomic(status_file, json.dumps({"returncode": code, "signal": -code if code < 0 else None}))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
