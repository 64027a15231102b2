"""The Jupyter server extension: the aiflow REST API under ``/aiflow/api/`` and the push channel.

Enabled on install (``jupyter-config/jupyter_server_config.d/aiflow_notebook.json``); ``jupyter server
extension list`` shows ``aiflow_notebook.server_extension enabled``. See docs/server_extension.md.
"""

from __future__ import annotations

from aiflow_notebook.core.version import __version__
from aiflow_notebook.server_extension.app import AIFlowExtension
from aiflow_notebook.server_extension.push import BUS_EVENT_SCHEMA, BUS_EVENT_SCHEMA_ID

__all__ = ["BUS_EVENT_SCHEMA", "BUS_EVENT_SCHEMA_ID", "AIFlowExtension", "__version__"]


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "aiflow_notebook.server_extension", "app": AIFlowExtension}]
