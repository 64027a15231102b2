"""``train`` and ``inference``: put a TensorFlow cluster into a Flink job (DESIGN §4.6)."""

from __future__ import annotations

from typing import Any

from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import StatementSet, Table

from dl_on_flink.operator import place_inference, place_training
from dl_on_flink.tensorflow.cluster_config import TFClusterConfig


def train(
    env_or_statement_set: StreamExecutionEnvironment | StatementSet,
    config: TFClusterConfig,
    input: DataStream | Table | None = None,
    max_epoch: int = 1,
) -> None:
    """Add a TensorFlow training cluster to the job; run it with ``env.execute()``.

    Without ``input`` the job ends when worker 0's entry returns. With ``input`` the rows are spread over
    the workers (``get_tfdataset_from_flink()``), bounded input is replayed ``max_epoch`` times, and the
    job ends when every worker returned. As in dl-on-flink, ``env_or_statement_set`` may be a Table
    ``StatementSet`` and ``input`` a ``Table`` (then run ``statement_set.execute()``).
    """
    place_training(env_or_statement_set, config, TFClusterConfig, input=input, max_epoch=max_epoch)


def inference(
    env_or_statement_set: StreamExecutionEnvironment | StatementSet,
    input: DataStream | Table,
    config: TFClusterConfig,
    output_schema: Any,
) -> DataStream | Table:
    """Run the entry on every worker over ``input``; return the stream of rows the workers write
    (a ``Table`` when given a ``StatementSet``; ``output_schema`` as in :func:`dl_on_flink.pytorch.inference`)."""
    return place_inference(env_or_statement_set, config, TFClusterConfig, input=input, output_schema=output_schema)

