"""Placing dl_on_flink roles into PyFlink jobs (the framework layer knows nothing of Flink)."""

from dl_on_flink.operator.placement import place_cluster, place_inference, place_training, subtask_keys

__all__ = ["place_cluster", "place_inference", "place_training", "subtask_keys"]
