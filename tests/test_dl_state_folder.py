"""A state folder named like a package must not shadow it (the defect "a state folder shadows a package").

``AIFLOW_HOME`` held ``dl_on_flink/address_book``. A notebook whose folder is ``AIFLOW_HOME`` ran its second
training job there, as the job's working directory, first on ``sys.path``: with our packages installed in
editable mode (a finder that runs after Python's path finder), ``import dl_on_flink`` found the folder as
a namespace package, ``dl_on_flink.__file__`` was None and placing the cluster raised ``TypeError``.

The job processes here run as the scheduler starts them (``python -m aiflow_notebook.engines.job_main``,
the working directory its folder) with our packages provided only as an editable install provides them:
a ``sitecustomize`` puts such a finder for this checkout on ``sys.meta_path``, and nothing of ours is on
``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiflow_notebook.engines.process import PYFLINK_WORKER_VARIABLES
from dl_on_flink.framework.address_book import FileAddressBook, default_address_book

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''
"""Our packages as an editable install provides them: by a finder that runs after the path finder."""
import sys
from importlib.machinery import PathFinder
from importlib.util import spec_from_file_location

ROOT = {root!r}
PACKAGES = ("aiflow_notebook", "dl_on_flink", "kernel_magics")


class EditableFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        top, _, rest = fullname.partition(".")
        if top not in PACKAGES:
            return None
        if not rest:
            return spec_from_file_location(fullname, f"{{ROOT}}/{{top}}/__init__.py",
                                           submodule_search_locations=[f"{{ROOT}}/{{top}}"])
        if "." not in rest:  # as setuptools' finder: the children of a top-level name, even of a namespace
            return PathFinder.find_spec(fullname, [f"{{ROOT}}/{{top}}"])
        return None


sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, EditableFinder)
'''

PROBE_JOB = '''
"""Job runners (``probe_job:report``, ``probe_job:train``) that say which dl_on_flink they imported."""
import json
import sys


def seen():
    import dl_on_flink
    import helper  # the job's own module, in its working directory

    return {"dl_on_flink": dl_on_flink.__file__, "helper": helper.VALUE, "path0": sys.path[0]}


def report(spec):
    with open(spec["out"], "w") as fh:
        json.dump(seen(), fh)


def entry(ctx):
    with open(ctx.get_property("out"), "w") as fh:
        json.dump(seen(), fh)


def run_node(spec):
    """The AM and a node runner in the job process (no Flink, whose workers put our folder on the path)."""
    from dl_on_flink.framework.address_book import FileAddressBook
    from dl_on_flink.framework.am import ApplicationMaster
    from dl_on_flink.framework.cluster import ClusterConfig
    from dl_on_flink.framework.node import NodePlan, NodeRunner

    config = (ClusterConfig.new_builder().add_node_type("worker", 1).set_node_entry(entry)
              .set_property("out", spec["out"]).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(spec["out"] + ".book")
    runner = NodeRunner(NodePlan("job", config, "worker", book), 0).start()
    try:
        ApplicationMaster("job", config, book, has_input=False).run(stop_after=120)
    finally:
        runner.close()


def train(spec):
    from dl_on_flink.framework.cluster import ClusterConfig
    from dl_on_flink.operator import place_cluster
    from dl_on_flink.testing import local_env

    env = local_env()
    config = (ClusterConfig.new_builder().add_node_type("worker", 1).set_node_entry(entry)
              .set_property("out", spec["out"]).build())
    place_cluster(env, config)
    env.execute("a job whose folder holds dl_on_flink/")
'''


@pytest.fixture
def notebook_folder(tmp_path) -> Path:
    """AIFLOW_HOME as a notebook's folder: the old state folder ``dl_on_flink/`` and the notebook's own module."""
    home = tmp_path / "aiflow_home"
    (home / "dl_on_flink" / "address_book").mkdir(parents=True)
    (home / "helper.py").write_text("VALUE = 'the notebook folder'\n")
    return home


@pytest.fixture
def editable_env(tmp_path, notebook_folder) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(ROOT)))
    (site / "probe_job.py").write_text(PROBE_JOB)
    env = {key: value for key, value in os.environ.items() if key not in PYFLINK_WORKER_VARIABLES}
    env.update(PYTHONPATH=str(site), AIFLOW_HOME=str(notebook_folder))
    return env


def run_job(runner: str, folder: Path, env: dict[str, str], tmp_path: Path, timeout: float) -> dict:
    """Run a job as the scheduler does, in ``folder``; what its runner saw."""
    out = tmp_path / f"{runner.replace(':', '-')}.json"
    spec = {"workflow": "w", "run_id": 1, "job_run_id": 1, "attempt": 0, "runner": runner, "cwd": str(folder),
            "job": {"name": "probe", "engine": "python", "payload": None}, "out": str(out)}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "aiflow_notebook.engines.job_main", str(spec_path)], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"the job failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_the_editable_install_really_loses_to_the_state_folder(notebook_folder, editable_env):
    """The premise: a plain process in that folder imports the folder, not the package."""
    probe = "import dl_on_flink; print(dl_on_flink.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=notebook_folder, env=editable_env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "None"


def test_a_job_in_a_folder_holding_dl_on_flink_imports_the_package(notebook_folder, editable_env, tmp_path):
    seen = run_job("probe_job:report", notebook_folder, editable_env, tmp_path, timeout=120)
    assert seen["dl_on_flink"] == str(ROOT / "dl_on_flink" / "__init__.py")
    assert seen["helper"] == "the notebook folder"  # the job's code still imports from its folder first
    assert seen["path0"] == str(notebook_folder)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("no_dl_child_left_behind")
def test_a_training_job_in_that_folder_places_its_cluster_and_its_node_imports_the_package(
        notebook_folder, editable_env, tmp_path):
    seen = run_job("probe_job:train", notebook_folder, editable_env, tmp_path, timeout=280)
    assert seen["dl_on_flink"] == str(ROOT / "dl_on_flink" / "__init__.py")  # in the node's child process
    assert seen["helper"] == "the notebook folder"
    assert list((notebook_folder / "dl_on_flink" / "address_book").iterdir()) == []  # the AM used the new one
    assert (notebook_folder / "dl-on-flink" / "address-book").is_dir()


@pytest.mark.slow
@pytest.mark.usefixtures("no_dl_child_left_behind")
def test_a_node_child_started_from_that_folder_imports_the_package(notebook_folder, editable_env, tmp_path):
    seen = run_job("probe_job:run_node", notebook_folder, editable_env, tmp_path, timeout=150)
    assert seen["dl_on_flink"] == str(ROOT / "dl_on_flink" / "__init__.py")  # in the node's child process
    assert seen["helper"] == "the notebook folder"  # on the child's path as on its operator's


def test_state_folders_are_no_python_names(tmp_path, monkeypatch):
    monkeypatch.delenv("DL_ON_FLINK_ADDRESS_BOOK", raising=False)
    monkeypatch.setenv("AIFLOW_HOME", str(tmp_path))
    book = default_address_book()
    assert isinstance(book, FileAddressBook) and book.root == tmp_path / "dl-on-flink" / "address-book"
    book.publish("job-1", 0, "tcp://127.0.0.1:1")
    created = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_dir()]
    assert len(created) == 3 and not any(part.isidentifier() for path in created for part in path.parts), created
