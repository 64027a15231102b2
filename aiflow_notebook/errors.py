"""The error hierarchy users catch: every failure we raise on purpose is an ``AIFlowError``.

Each subpackage defines its own subclasses next to the code that raises them (they all derive from
``AIFlowError``), so ``except af.AIFlowError`` catches everything the product reports, while
programming errors (bugs) stay ordinary Python exceptions.
"""

from __future__ import annotations


class AIFlowError(Exception):
    """Base of every error aiflow-notebook raises on purpose; the message says what and how to fix."""


class ConfigurationError(AIFlowError, ValueError):
    """A setting (environment variable, argument, URL) is malformed or inconsistent."""
