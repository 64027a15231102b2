"""The throw-away PostgreSQL server lives in :mod:`aiflow_notebook.postgres_server` (``aiflow demo --cluster
--postgres`` starts it too); this name stays for the tests that import it from here."""

from aiflow_notebook.postgres_server import PostgresServer, postgres_bin_dir

__all__ = ["PostgresServer", "postgres_bin_dir"]
