"""pytest-jupyter's server fixtures (``jp_serverapp``, ``jp_fetch``, ``jp_ws_fetch``) for the tests of this
directory only: the plugin brings autouse fixtures (an asyncio loop, a ServerApp cleanup) and runs every
test function through its own hook, which the rest of the suite does not want."""

from __future__ import annotations

import resource

import pytest

_open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
from pytest_jupyter.jupyter_server import *  # noqa: E402, F403 - the plugin's fixtures and hooks, for this directory
from traitlets.config import Config  # noqa: E402

# Importing the plugin sets the soft limit of open files to 4096, also when it was higher: the rest of the
# suite (many sockets and processes at once) keeps the limit it had.
resource.setrlimit(resource.RLIMIT_NOFILE, _open_files)


@pytest.fixture
def jp_server_config():  # noqa: F811 - replaces the plugin's
    """The server loads our extension, as the installed jupyter-config makes a real one do."""
    return Config({"ServerApp": {"jpserver_extensions": {"aiflow_notebook.server_extension": True, "jupyter_server_terminals": True}}})
