"""Initialising ``torch.distributed`` in each child before the entry runs.

No port is reserved and released: rank 0 creates the rendezvous ``TCPStore`` on port 0 in its own process
(the kernel picks a free port at bind time and the store keeps it), advertises the port through the AM,
and the other ranks connect to it; gloo binds its own pair sockets the same way and exchanges them
through the store.
"""

from __future__ import annotations

import os
from datetime import timedelta

from dl_on_flink.framework.context import Context
from dl_on_flink.framework.hooks import NodeHooks

STORE_KEY = "_torch_store"


class PyTorchHooks(NodeHooks):
    def prepare(self, ctx: Context) -> dict[str, str]:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(int(ctx.get_property("num_threads", "1")))
        if ctx.get_index() != 0:
            return {}
        store = dist.TCPStore(
            ctx.get_host(), 0, ctx.get_node_type_count_map()["worker"], is_master=True,
            timeout=_timeout(ctx), wait_for_workers=False,
        )
        ctx._state[STORE_KEY] = store
        return {"master_port": str(store.port)}

    def setup(self, ctx: Context) -> None:
        import torch.distributed as dist

        master = ctx.get_cluster_spec()["worker"][0]
        host, port = master["host"], int(master["props"]["master_port"])
        world_size, rank = len(ctx.get_cluster_spec()["worker"]), ctx.get_index()
        store = ctx._state.get(STORE_KEY) or dist.TCPStore(host, port, world_size, is_master=False, timeout=_timeout(ctx))
        ctx._state[STORE_KEY] = store
        os.environ.update(MASTER_ADDR=host, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
        if host in ("127.0.0.1", "localhost"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=_timeout(ctx))

    def teardown(self, ctx: Context) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _timeout(ctx: Context) -> timedelta:
    return timedelta(seconds=float(ctx.get_property("rendezvous_timeout", "180")))
