"""Run notebooks/00_quickstart.ipynb headless (nbclient) and print what happened, cell by cell.

This is `make demo`. State goes to .demo/aiflow_home (fresh each run) so you can inspect it after:
    AIFLOW_HOME=.demo/aiflow_home .venv/bin/aiflow models versions ctr
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "00_quickstart.ipynb"
HOME = REPO / ".demo" / "aiflow_home"


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    os.environ["AIFLOW_HOME"] = str(HOME)
    os.environ.pop("AIFLOW_META_URL", None)
    # The kernel is the venv's python: put it first on PATH for the kernelspec's plain "python".
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    started = time.monotonic()
    print(f"== running {NOTEBOOK.relative_to(REPO)} ({len(code_cells)} code cells), AIFLOW_HOME={HOME}")

    def on_cell_executed(cell, cell_index, execute_reply, **_):
        number = code_cells.index(cell) + 1
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        print(f"-- [{number}/{len(code_cells)}] {first_line}")
        for output in cell.get("outputs", []):
            print(_describe(output))

    # IPC sockets (not TCP on loopback): private to this machine's user, and no plaintext-TCP warning.
    kernel = KernelManager(kernel_name="python3", transport="ipc")
    client = NotebookClient(nb, km=kernel, timeout=600, resources={"metadata": {"path": str(REPO)}},
                            on_cell_executed=on_cell_executed)
    try:
        client.execute()
    except CellExecutionError as exc:
        print(f"\n!! the quickstart failed:\n{exc}", file=sys.stderr)
        return 1
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel()  # a clean exit: the kernel stops the jobs its scheduler started
    elapsed = time.monotonic() - started
    print(f"== quickstart finished: {len(code_cells)} cells in {elapsed:.1f} s")
    print(f"   inspect the result: AIFLOW_HOME={HOME.relative_to(REPO)} .venv/bin/aiflow models versions ctr")
    root = " --allow-root" if os.geteuid() == 0 else ""
    print(f"   see it in JupyterLab: AIFLOW_HOME={HOME.relative_to(REPO)} .venv/bin/jupyter lab{root}, open the\n"
          "   AI Flow sidebar (left bar) and run a notebook: its runs, jobs, logs, events and model versions\n"
          "   update live there (docs/lab_extension.md)")
    return 0


def _describe(output) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return _indent(output.get("text", ""))
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        if "image/svg+xml" in data:
            return f"   [graph: SVG, {len(data['image/svg+xml']):,} bytes]"
        return _indent(data.get("text/plain", ""))
    if kind == "error":
        return _indent(f"{output.get('ename')}: {output.get('evalue')}")
    return f"   [{kind}]"


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" for line in text.rstrip().splitlines())


if __name__ == "__main__":
    sys.exit(main())
