"""The SDK verbs that reach services: submit and connect, the model center, schedules and datasets, on
the embedded default or the connected ``aiflow server``.
"""
