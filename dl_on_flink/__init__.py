"""Distributed TensorFlow and PyTorch roles inside Flink jobs (DESIGN §4.6)."""
