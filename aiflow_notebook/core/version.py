"""The release of aiflow-notebook, in one place: the package root, the server extension and ``aiflow version``
all say this."""

__version__ = "0.1.0"
