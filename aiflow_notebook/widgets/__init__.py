"""Live notebook panels (ipywidgets 8): ``GraphWidget``, ``EventPanel``, ``RunPanel``, ``ModelPanel``,
``LineageWidget``. Each keeps what it shows in traits and follows the event bus on threads of its own
(see ``follow``); ``close()`` stops them. Imports ipywidgets: load it only where panels are shown."""

from aiflow_notebook.widgets.events import EventPanel
from aiflow_notebook.widgets.follow import live_threads, stop_all
from aiflow_notebook.widgets.lineage import LineageWidget
from aiflow_notebook.widgets.models import ModelPanel
from aiflow_notebook.widgets.runs import GraphWidget, RunPanel

__all__ = ["EventPanel", "GraphWidget", "LineageWidget", "ModelPanel", "RunPanel", "live_threads", "stop_all"]
