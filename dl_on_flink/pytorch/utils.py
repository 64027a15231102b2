"""``train`` and ``inference``: put a PyTorch cluster into a Flink job (DESIGN §4.6)."""

from __future__ import annotations

from typing import Any

from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import StatementSet, Table

from dl_on_flink.operator import place_inference, place_training
from dl_on_flink.pytorch.cluster_config import PyTorchClusterConfig


def train(
    env_or_statement_set: StreamExecutionEnvironment | StatementSet,
    config: PyTorchClusterConfig,
    input: DataStream | Table | None = None,
    max_epoch: int = 1,
) -> None:
    """Add a PyTorch training cluster to the job; run it with ``env.execute()``.

    As in dl-on-flink, ``env_or_statement_set`` may be a Table ``StatementSet`` and ``input`` a ``Table``:
    then run it with ``statement_set.execute()``.

    Without ``input`` every worker runs its entry and reads its own data. With ``input`` (rows with a
    typed ROW type) the rows are spread over the workers; ``get_dataset_from_flink()`` yields them, and
    a bounded input is replayed ``max_epoch`` times, each epoch ending with an end-of-epoch marker.
    """
    place_training(env_or_statement_set, config, PyTorchClusterConfig, input=input, max_epoch=max_epoch)


def inference(
    env_or_statement_set: StreamExecutionEnvironment | StatementSet,
    input: DataStream | Table,
    config: PyTorchClusterConfig,
    output_schema: Any,
) -> DataStream | Table:
    """Run the entry on every worker over ``input``; return the stream of rows the workers write.

    ``output_schema``: a PyFlink ROW type (``Types.ROW_NAMED([...], [...])``), a ``pyflink.table.Schema``,
    a ``dl_on_flink.framework.Schema`` or a list of (name, type) pairs. Given a ``StatementSet`` (and a
    ``Table`` input, as in dl-on-flink) it returns a ``Table``: insert it into the statement set.
    """
    return place_inference(env_or_statement_set, config, PyTorchClusterConfig, input=input, output_schema=output_schema)

