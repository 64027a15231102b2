"""A job process stops promptly however many SIGTERMs it gets (aiflow_notebook.core.stop_signal).

A job gets SIGTERM twice by design (its process group's, and its launcher's forward). The streaming Flink
job's handler used to call ``threading.Event.set()``: a second signal arriving while the first handler held
the event's lock deadlocked the process until SIGKILL, so its savepoint was never taken. Real processes and
real signals here; a burst of them makes the nested delivery near certain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

LOOP = textwrap.dedent("""
    import signal
    from aiflow_notebook.core.stop_signal import StopSignal
    stop = StopSignal()
    print("ready", flush=True)
    while not stop.wait(0.25):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the rest of the burst, while this process exits
    print("stopped", flush=True)
""")


def test_a_burst_of_sigterms_stops_the_loop_at_once():
    for _attempt in range(10):
        process = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "ready"
            began = time.monotonic()
            while time.monotonic() - began < 0.5 and process.poll() is None:  # signals keep coming while it stops
                os.kill(process.pid, signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert process.stdout.read().strip() == "stopped"
            assert time.monotonic() - began < 5
        finally:
            process.kill()
            process.wait()


def test_wait_returns_false_when_no_signal_came_and_restore_puts_back_the_handler():
    from aiflow_notebook.core.stop_signal import StopSignal

    before = signal.getsignal(signal.SIGUSR2)
    stop = StopSignal((signal.SIGUSR2,))
    try:
        began = time.monotonic()
        assert stop.wait(0.2) is False and not stop.requested
        assert 0.19 <= time.monotonic() - began < 2
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.wait(5) is True and stop.requested
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR2) is before
