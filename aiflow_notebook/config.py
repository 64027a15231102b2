"""Where things live by default: ``AIFLOW_HOME`` (default ``~/.aiflow``) and the metadata URL.

Read at call time, never at import, so a test or notebook can change the environment first.
"""

from __future__ import annotations

import os
from pathlib import Path


def aiflow_home() -> Path:
    """The directory for local state: ``$AIFLOW_HOME``, else ``~/.aiflow``."""
    return Path(os.environ.get("AIFLOW_HOME") or "~/.aiflow").expanduser()


def default_meta_url() -> str:
    """``$AIFLOW_META_URL``, else a SQLite file ``meta.db`` under :func:`aiflow_home`."""
    url = os.environ.get("AIFLOW_META_URL")
    if url:
        return url
    return f"sqlite:///{aiflow_home() / 'meta.db'}"
