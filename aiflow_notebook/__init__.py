"""aiflow-notebook: event-driven ML workflows on Flink, from Jupyter.

``import aiflow_notebook as af`` gives the notebook SDK (DESIGN §4.1). Importing it is cheap: no IPython,
Flink or deep-learning framework is imported here.
"""

from aiflow_notebook.errors import AIFlowError, ConfigurationError
from aiflow_notebook.meta import MetadataStore, ModelVersion, Stage, default_store
from aiflow_notebook.model_center_api import (
    get_latest_model_version,
    get_model_version,
    lineage,
    list_model_versions,
    register_model,
    register_model_version,
    update_model_version,
)

__version__ = "0.1.0"

__all__ = [
    "AIFlowError",
    "ConfigurationError",
    "MetadataStore",
    "ModelVersion",
    "Stage",
    "__version__",
    "default_store",
    "get_latest_model_version",
    "get_model_version",
    "lineage",
    "list_model_versions",
    "register_model",
    "register_model_version",
    "update_model_version",
]
