"""Job runners per engine: which code runs a job of that engine inside its job process.

Every job runs as ``python -m aiflow_notebook.engines.job_main SPEC`` in its own supervised process group
(see ``process``). The registry maps an engine name to the function that the job process calls with the
job's spec — an import path string, so the scheduler never imports Flink, PyTorch or TensorFlow itself:

    register_engine("xgboost", "my_plugin.engine:run_job")
"""

from __future__ import annotations

from aiflow_notebook.core.engine_names import register_engine_name
from aiflow_notebook.core.errors import AIFlowError, UnknownEngineError

_ENGINES: dict[str, str] = {
    "python": "aiflow_notebook.engines.python_job:run_job",
    "bash": "aiflow_notebook.engines.bash_job:run_job",
    "flink": "aiflow_notebook.engines.flink_job:run_job",
    "pytorch": "aiflow_notebook.engines.dl_job:run_pytorch_job",
    "tensorflow": "aiflow_notebook.engines.dl_job:run_tensorflow_job",
}


def register_engine(name: str, runner: str) -> None:
    """Make ``name`` runnable: ``runner`` is ``"module:function"``, called as ``function(spec)`` in the job process."""
    if not isinstance(runner, str) or ":" not in runner:
        raise AIFlowError(f"register_engine({name!r}, ...): runner must be 'module:function', got {runner!r}")
    register_engine_name(name)  # so af.compile accepts jobs of this engine
    _ENGINES[name] = runner


def engine_runner(name: str) -> str:
    try:
        return _ENGINES[name]
    except KeyError:
        runnable = ", ".join(sorted(_ENGINES))
        raise UnknownEngineError(f"no runner is installed for engine {name!r}; runnable engines: {runnable} "
                                 "(a plug-in adds one with aiflow_notebook.engines.register_engine)") from None
