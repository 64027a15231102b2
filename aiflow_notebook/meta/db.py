"""The metadata store's database helpers: they live one floor down, in :mod:`aiflow_notebook.database`.

Re-exported here so that ``from aiflow_notebook.meta.db import Database`` keeps working.
"""

from aiflow_notebook.database import (
    Database,
    alembic_config,
    head_revision,
    parse_url,
    safe_url,
)

__all__ = ["Database", "alembic_config", "head_revision", "parse_url", "safe_url"]
