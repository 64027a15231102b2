"""NodePlan: what every subtask of one role operator needs to run its node (pickled into the PyFlink function)."""

from __future__ import annotations

from dataclasses import dataclass

from dl_on_flink.framework.address_book import AddressBook
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.codec import Schema


@dataclass
class NodePlan:
    """The cluster, the role (``node_type``), where to find the AM, and for a fed role its rows' schemas."""

    job_key: str
    config: ClusterConfig
    node_type: str
    address_book: AddressBook
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    max_epoch: int = 1
