"""Initialising ``torch.distributed`` in each child before the entry runs.

No port is reserved and released: rank 0 creates the rendezvous ``TCPStore`` on port 0 in its own process
(the kernel picks a free port at bind time and the store keeps it), advertises the port through the AM,
and the other ranks connect to it; gloo binds its own pair sockets the same way and exchanges them
through the store.

Entries written for dl-on-flink initialise the process group themselves (``MASTER_ADDR`` /
``MASTER_PORT`` from ``PyTorchContext.get_master_ip()`` / ``get_master_port()``, then
``dist.init_process_group("gloo", world_size=..., rank=...)``). So that both styles work, after our
initialisation ``torch.distributed.init_process_group`` accepts a second call for the same world (same
size and rank, backend gloo) and returns without doing anything; a call for another world is refused
with a message that says why. The store is *multi-tenant*, so an ``env://`` rendezvous on rank 0 (after a
``destroy_process_group()``) reuses it instead of failing to bind the same port.
"""

from __future__ import annotations

import functools
import inspect
import os
from datetime import timedelta
from typing import Any

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
            timeout=_timeout(ctx), wait_for_workers=False, multi_tenant=True,
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
        _accept_the_entrys_own_init(world_size, rank)

    def teardown(self, ctx: Context) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _accept_the_entrys_own_init(world_size: int, rank: int) -> None:
    """Make ``torch.distributed.init_process_group`` a no-op for the world we initialised (see above)."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    original = c10d.init_process_group
    if getattr(original, "_dl_on_flink", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any) -> None:
        if not dist.is_initialized():
            return original(*args, **kwargs)
        asked = signature.bind(*args, **kwargs).arguments
        backend = str(asked.get("backend") or "gloo").lower()
        wrong = [
            f"{name} {value!r} (this node has {ours!r})"
            for name, value, ours in (("world_size", asked.get("world_size", -1), world_size),
                                      ("rank", asked.get("rank", -1), rank))
            if value not in (-1, None, ours)
        ]
        if backend not in ("gloo", "cpu:gloo"):
            wrong.append(f"backend {backend!r} (dl_on_flink initialised gloo)")
        if wrong:
            raise ValueError(
                "dl_on_flink already initialised torch.distributed for this node; init_process_group was called "
                "again with " + ", ".join(wrong)
            )
        return None

    init_process_group._dl_on_flink = True
    c10d.init_process_group = init_process_group
    dist.init_process_group = init_process_group


def _timeout(ctx: Context) -> timedelta:
    return timedelta(seconds=float(ctx.get_property("rendezvous_timeout", "180")))
