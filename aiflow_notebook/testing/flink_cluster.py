"""The standalone Flink cluster for tests and benchmarks lives in :mod:`aiflow_notebook.flink_cluster`
(``aiflow demo --cluster`` starts it too); this name stays for the tests that import it from here."""

from aiflow_notebook.flink_cluster import StandaloneFlinkCluster, pyflink_home

__all__ = ["StandaloneFlinkCluster", "pyflink_home"]
