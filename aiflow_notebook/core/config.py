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
    """``$AIFLOW_META_URL``, else a SQLite file ``meta.db`` under :func:`aiflow_home`.

    In a job process ``$AIFLOW_META_URL`` carries no password; the scheduler hands the full URL over a pipe
    and :func:`remember_meta_url` keeps it in this process's memory, where this function finds it.
    """
    url = os.environ.get("AIFLOW_META_URL")
    if url:
        return _full_urls.get(url, url)
    return f"sqlite:///{aiflow_home() / 'meta.db'}"


_full_urls: dict[str, str] = {}


def remember_meta_url(public_url: str, full_url: str) -> None:
    """In this process only, take ``full_url`` (with its password) wherever ``public_url`` is configured.

    Never written to the environment or a file, so the password does not reach child processes, job
    spec files or ``/proc/<pid>/environ``.
    """
    _full_urls[public_url] = full_url
