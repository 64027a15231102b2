"""The notebook the browser tests and the sidebar benchmark open in JupyterLab, when the repository's
notebooks/03_live_panels.ipynb is not there: a batch chain (prep → train) and a streaming job (serve)
restarted when a version of model ``ctr`` is validated, submitted from the notebook."""

from __future__ import annotations

from pathlib import Path

import nbformat

WORKFLOW = "lab_demo"
MODEL = "ctr"

CELLS = [
    """\
import time
import aiflow_notebook as af

def prep(context):
    print("prep: rows ready", flush=True)
    time.sleep(1)

def train(context):
    print("train: model fitted", flush=True)
    time.sleep(1)

def serve(context):
    print("serve: serving the newest validated model", flush=True)
    while True:
        time.sleep(0.2)""",
    f"""\
with af.workflow("{WORKFLOW}"):
    with af.job_config("prep"):
        af.user_define_operation(prep, name="prep", output_num=0)
    with af.job_config("train"):
        af.user_define_operation(train, name="train", output_num=0)
    with af.job_config("serve", streaming=True):
        af.user_define_operation(serve, name="serve", output_num=0)
    af.action_on_job_status("train", upstream="prep")
    af.action_on_model_version_event("serve", model="{MODEL}", event_type="MODEL_VALIDATED", action="RESTART")
run = af.submit("{WORKFLOW}")
run""",
    f"""\
af.register_model("{MODEL}")
af.register_model_version("{MODEL}", uri="file:///tmp/{MODEL}/1", metrics={{"auc": 0.91}}).version""",
    """\
%load_ext kernel_magics
%aiflow status""",
]


def write_scenario(path: Path) -> Path:
    """Write the scenario notebook to ``path`` (unexecuted, Python 3 kernel)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(nb, path)
    return path
