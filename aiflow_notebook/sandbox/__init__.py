"""Throw-away infrastructure that ``aiflow demo --cluster`` (and the tests) start on loopback: a standalone
Flink cluster from the PyFlink wheel and a PostgreSQL server from Debian's package.
"""
