"""The magics in a real kernel (nbclient): notebooks/01_define_a_workflow.ipynb draws every job and node, and
re-running a job cell keeps the node count."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_define_a_workflow.ipynb"
JOBS = ["prep", "train", "serve"]
NODES = ["read_clicks", "featurize", "write_features", "read_features", "train", "read_click_stream",
         "predict_ctr", "write_scores"]


def svgs(cell) -> list[str]:
    return [o["data"]["image/svg+xml"] for o in cell.get("outputs", []) if "image/svg+xml" in o.get("data", {})]


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
def test_notebook_draws_the_split_graph_and_a_rerun_keeps_the_node_count(aiflow_home):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert errors == []

        show = next(c for c in nb.cells if c.source.strip() == "%aiflow show")
        (svg,) = svgs(show)
        for name in JOBS + NODES:
            assert f">{name}<" in svg, name
        assert "FINISHED → START" in svg and "MODEL_VALIDATED → RESTART" in svg
        job_cells = [c for c in nb.cells if c.source.startswith("%%aiflow job")]
        assert [len(svgs(c)) for c in job_cells[:3]] == [1, 1, 1]  # each job cell drew the graph
        bad = job_cells[3]
        assert "aiflow: unknown engine 'spark'" in text(bad) and not svgs(bad)

        count = nbformat.v4.new_code_cell(
            "g = af.workflow('ctr'); print(len(g.nodes), len(g.jobs), len(g.control_edges), af.compile().content_hash)")
        nb.cells.append(count)
        client.execute_cell(count, len(nb.cells) - 1)
        before = text(count)
        assert before.split()[:3] == ["8", "3", "2"]
        prep = job_cells[0]
        client.execute_cell(prep, nb.cells.index(prep))  # re-run the prep cell...
        rules = next(c for c in nb.cells if c.source.startswith("af.action_on_job_status"))
        client.execute_cell(rules, nb.cells.index(rules))  # ...and the rules cell
        assert svgs(prep)
        count.outputs = []
        client.execute_cell(count, len(nb.cells) - 1)
        assert text(count) == before  # same nodes, jobs, rules and content hash
