"""Helpers for tests and benchmarks that need real servers (PostgreSQL, free ports)."""
