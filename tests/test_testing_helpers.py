"""The shared test helpers judge only what they should: processes of this session, committed part files\n(the product's one reader of them, ``storage.part_files``)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

from aiflow_notebook.storage.part_files import read_lines, read_rows
from aiflow_notebook.testing.processes import SESSION_VARIABLE, our_processes, wait_no_process_left


def _detached_sleeper(marker: str, env: dict[str, str]) -> int:
    """A `sleep` that is no longer our descendant (double fork: its parent exits), as a leaked job is."""
    out = subprocess.run(["bash", "-c", f"exec -a '{marker}' sleep 120 >/dev/null 2>&1 & echo $!"],
                         env=env, capture_output=True, text=True, check=True, start_new_session=True)
    return int(out.stdout)


def test_no_process_left_counts_ours_even_detached_and_never_another_sessions():
    marker = f"aiflow-test-sleeper-{uuid.uuid4().hex[:8]}"
    foreign_env = {k: v for k, v in os.environ.items() if k != SESSION_VARIABLE}
    ours = _detached_sleeper(marker, dict(os.environ))
    theirs = _detached_sleeper(marker, foreign_env)  # as if another person's test session had started it
    try:
        found = our_processes(cmdline=marker)
        assert [int(line.split()[0]) for line in found] == [ours], found
        assert our_processes(pids=[theirs]) != [], "named pids are looked at whoever started them"
    finally:
        for pid in (ours, theirs):
            os.kill(pid, signal.SIGKILL)
    assert wait_no_process_left(cmdline=marker, timeout=10) == []


def test_committed_part_files_are_read_and_hidden_or_underscored_ones_are_not(tmp_path):
    """The one reader of part files (datasets, tests, benchmarks): what a sink committed, nothing in progress."""
    out = tmp_path / "scores"
    assert read_lines(out) == []
    (out / "2026-11-28--18").mkdir(parents=True)
    (out / "part-a-0").write_text("b,2\na,1\n")
    (out / "2026-11-28--18" / "part-b-0").write_text("c,3\n")
    (out / ".part-c-0.inprogress.1234").write_text("half,0\n")
    (out / "2026-11-28--18" / ".part-d-0.inprogress.99").write_text("half,1\n")
    (out / "_SUCCESS").write_text("marker\n")
    (out / "_temporary" / "0").mkdir(parents=True)
    (out / "_temporary" / "0" / "part-e-0").write_text("uncommitted,4\n")
    assert sorted(read_lines(out)) == ["a,1", "b,2", "c,3"]
    assert sorted(read_rows(out, schema={"name": "str", "n": "int"})) == [["a", 1], ["b", 2], ["c", 3]]
