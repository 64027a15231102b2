"""dl-on-flink's ``dl-on-flink-pytorch/src/test/resources/all_gather.py`` and ``with_input.py``
(flink-extended/dl-on-flink): entries that initialise ``torch.distributed`` themselves, and gather
``[1, 1]`` int32 buffers of the rows they read. Changed: the imports, and each rank writes what it
gathered to a file (the originals print it) together with the context's dl-on-flink names."""

import json
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dl_on_flink.framework.context import Context
from dl_on_flink.pytorch import PyTorchContext


def main(context: Context):
    pytorch_context = PyTorchContext(context)
    os.environ['MASTER_ADDR'] = pytorch_context.get_master_ip()
    os.environ['MASTER_PORT'] = str(pytorch_context.get_master_port())
    dist.init_process_group('gloo', world_size=pytorch_context.get_world_size(),
                            rank=pytorch_context.get_rank())
    res_tensors = [torch.zeros(1, dtype=torch.long) for _ in
                   range(pytorch_context.get_world_size())]
    dist.all_gather(res_tensors, torch.tensor([pytorch_context.get_rank()]))
    _record(context, "all_gather", [t.tolist() for t in res_tensors])


def with_input(context: Context):
    pytorch_context = PyTorchContext(context)
    os.environ['MASTER_ADDR'] = pytorch_context.get_master_ip()
    os.environ['MASTER_PORT'] = str(pytorch_context.get_master_port())
    dist.init_process_group('gloo', world_size=pytorch_context.get_world_size(),
                            rank=pytorch_context.get_rank())

    dataloader = DataLoader(pytorch_context.get_dataset_from_flink())
    gathered = []
    for r, in dataloader:
        output_tensors = [torch.zeros([1, 1], dtype=torch.int32) for _ in
                          range(dist.get_world_size())]
        dist.all_gather(output_tensors, r)
        gathered.append([t.tolist() for t in output_tensors])
    _record(context, "with_input", gathered)


def _record(context, what, gathered):
    names = {"identity": context.identity, "index": context.index, "roleName": context.roleName,
             "failNum": context.failNum, "properties": context.properties,
             "roleParallelism": context.roleParallelism}
    with open(os.path.join(context.get_property("out"), f"{what}-{context.index}.json"), "w") as fh:
        json.dump({"gathered": gathered, "names": names}, fh)
