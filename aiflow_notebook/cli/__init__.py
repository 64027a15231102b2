"""Every ``aiflow`` command: ``server``, ``events``, ``db``/``models``, ``schedule``/``trigger``, ``doctor`` and
``demo``, one module each; :func:`main` (in :mod:`aiflow_notebook.cli.aiflow`) is the console script."""

from aiflow_notebook.cli.aiflow import main

__all__ = ["main"]
