"""NodeHooks: what a framework does in the child process around the user's entry.

The order in the child is: ``prepare`` (before registering with the AM: bind what must be advertised, such
as PyTorch rank 0's rendezvous store, and return those properties) → rendezvous (the AM returns every
node's host and properties) → ``setup`` (e.g. ``init_process_group``, ``TF_CONFIG``) → entry →
``teardown``. The base class does nothing, which is what a framework-less cluster needs.
"""

from __future__ import annotations

from dl_on_flink.framework.context import Context


class NodeHooks:
    def prepare(self, ctx: Context) -> dict[str, str]:
        """Properties this node advertises to the others (called before rendezvous)."""
        return {}

    def setup(self, ctx: Context) -> None:
        """Called after rendezvous, before the entry; ``ctx.get_cluster_spec()`` is complete."""

    def teardown(self, ctx: Context) -> None:
        """Called after the entry returned normally."""
