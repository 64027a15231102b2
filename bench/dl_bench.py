"""Deep learning on Flink benchmark (../shared/BENCHMARKS.md, "Deep learning on Flink").

    .venv/bin/python bench/dl_bench.py [--runs 3] [--feed-rows 100000] [--channel-rows 100000] [--ddp-steps 3000]

Prints one JSON line per figure, the median of --runs runs:

- feed: rows/s seen by a PyTorch training loop (Linear(16, 1), batch 256) fed by a Flink source in
  stream mode (NumberSequenceSource → map → dl_on_flink worker → child), ÷ rows/s of the same loop over
  the same rows from an in-process iterator. Rows: 16 float32 features + 1 float32 label. Both rates
  are taken from the first batch to the last, so cluster start-up is not in them.
- feed (batched): the same, but each Flink row carries one batch (256 samples as flat arrays) and the
  loop trains on it directly — the per-record cost of PyFlink's Python operators is paid per batch.
- table_feed (round 3): a 200,000-row CSV read by Flink's filesystem connector, as a Table or as the
  DataStream ``to_data_stream`` makes of it, fed through the Arrow-batched feed and through the per-record feed
  (``feed=row``) side by side, world size 1 and 2; the entry iterates ``DataLoader(get_dataset_from_flink(),
  batch_size=256)`` (and, ``_batched``, ``get_dataset_from_flink(batch_size=256)``); ÷ the same loop over
  the same rows from an in-process list (tuples of 17 floats; for ``_batched``, column tensors).
- inference (round 3): a streaming flink job ``read_dataset → af.predict → write_dataset`` scoring a
  200,000-row file with a torch MLP that has ``predict_batch`` (vectorized program, batches of 1,000), and
  a quarter of that row by row (``vectorized=False``), ÷ the model's ``predict_batch`` over the same rows
  in-process in batches of 1,000. The Flink rate runs from the file's arrival to the last committed score,
  less one checkpoint and one directory-monitor interval.
- channel: MB/s of 1 KB rows operator → child (encode, frame, ZeroMQ ipc, decode) and child → operator.
- transport (why ZeroMQ): the raw transport under the channel, 1 KB rows in 128 KB frames, ZeroMQ
  PUSH/PULL over ``ipc://`` vs a single-producer/single-consumer ring in ``multiprocessing.shared_memory``
  (which has to poll: both of its ends spin while waiting).
- ddp: wall time of 2-worker DDP training (linear regression, --ddp-steps steps) on Flink ÷ the same
  entry started with torch.multiprocessing; the cluster start-up (Flink wall time − training time) is
  reported separately.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
from benchlib import emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURES = 16
BATCH = 256



# --- feed ratio ------------------------------------------------------------------------------------

def make_row(i: int) -> tuple[list[float], float]:
    features = [((i * 7 + j) % 100) / 100 for j in range(FEATURES)]
    return features, float(sum(features))


def training_loop(batches) -> dict:
    """The loop both feeds drive: returns rows seen and seconds from the first batch to the last."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    rows, started = 0, None
    for features, label in batches:
        if started is None:
            started = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(features), label.float()[:, None])
        loss.backward()
        optimizer.step()
        rows += len(label)
    return {"rows": rows, "seconds": time.perf_counter() - started}


def feed_entry(ctx) -> None:
    from torch.utils.data import DataLoader

    from dl_on_flink.pytorch import PyTorchContext

    result = training_loop(DataLoader(PyTorchContext(ctx).get_dataset_from_flink(), batch_size=BATCH))
    Path(ctx.get_property("out")).write_text(json.dumps(result))


def in_process_feed(rows: int, queue) -> None:
    import numpy as np
    from torch.utils.data import DataLoader, IterableDataset

    prepared = [(np.asarray(f, dtype=np.float32), label) for f, label in map(make_row, range(rows))]

    class Rows(IterableDataset):  # the rows are made before the clock starts: only iteration is timed
        def __iter__(self):
            return iter(prepared)

    queue.put(training_loop(DataLoader(Rows(), batch_size=BATCH)))


def flink_feed(rows: int) -> dict:
    from pyflink.common import Row, Types
    from pyflink.common.watermark_strategy import WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from dl_on_flink.pytorch import PyTorchClusterConfig, train
    from dl_on_flink.testing import local_env

    out = Path(tempfile.mkdtemp()) / "feed.json"
    env = local_env()
    numbers = env.from_source(NumberSequenceSource(0, rows - 1), WatermarkStrategy.no_watermarks(), "numbers")
    data = numbers.map(
        lambda i: Row(*make_row(i)),
        output_type=Types.ROW_NAMED(["features", "label"], [Types.PRIMITIVE_ARRAY(Types.FLOAT()), Types.FLOAT()]),
    )
    config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(feed_entry)
              .set_property("out", out).build())
    train(env, config, input=data)
    env.execute("feed")
    return json.loads(out.read_text())


def make_batch(i: int) -> tuple[list[float], list[float]]:
    """Flink row i of the batched feed: samples i*BATCH .. i*BATCH+BATCH-1, features flattened."""
    features, labels = [], []
    for k in range(i * BATCH, (i + 1) * BATCH):
        f, label = make_row(k)
        features.extend(f)
        labels.append(label)
    return features, labels


def batched_loop(rows) -> dict:
    import numpy as np
    import torch

    def batches():
        for features, labels in rows:
            yield (torch.from_numpy(np.asarray(features, dtype=np.float32).reshape(-1, FEATURES)),
                   torch.from_numpy(np.asarray(labels, dtype=np.float32)))

    return training_loop(batches())


def batched_feed_entry(ctx) -> None:
    from dl_on_flink.pytorch import PyTorchContext

    result = batched_loop(PyTorchContext(ctx).get_dataset_from_flink())
    Path(ctx.get_property("out")).write_text(json.dumps(result))


def in_process_batched_feed(batches: int, queue) -> None:
    prepared = [make_batch(i) for i in range(batches)]  # made before the clock starts
    queue.put(batched_loop(iter(prepared)))


def flink_batched_feed(batches: int) -> dict:
    from pyflink.common import Row, Types
    from pyflink.common.watermark_strategy import WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from dl_on_flink.pytorch import PyTorchClusterConfig, train
    from dl_on_flink.testing import local_env

    out = Path(tempfile.mkdtemp()) / "feed.json"
    env = local_env()
    numbers = env.from_source(NumberSequenceSource(0, batches - 1), WatermarkStrategy.no_watermarks(), "numbers")
    array = Types.PRIMITIVE_ARRAY(Types.FLOAT())
    data = numbers.map(lambda i: Row(*make_batch(i)), output_type=Types.ROW_NAMED(["features", "labels"], [array, array]))
    config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(batched_feed_entry)
              .set_property("out", out).build())
    train(env, config, input=data)
    env.execute("batched feed")
    return json.loads(out.read_text())


def bench_batched_feed(runs: int, rows: int) -> None:
    batches = rows // BATCH
    ctx = multiprocessing.get_context("spawn")
    ratios, flink_rates = [], []
    for _ in range(runs):
        flink = flink_batched_feed(batches)
        queue = ctx.Queue()
        proc = ctx.Process(target=in_process_batched_feed, args=(batches, queue))
        proc.start()
        local = queue.get(timeout=600)
        proc.join()
        assert flink["rows"] == local["rows"] == batches * BATCH, (flink, local)
        flink_rates.append(flink["rows"] / flink["seconds"])
        ratios.append(flink_rates[-1] / (local["rows"] / local["seconds"]))
    emit("dl", "feed_batched_rows_per_s_flink", statistics.median(flink_rates), "rows/s", rows=batches * BATCH)
    emit("dl", "feed_batched_ratio", statistics.median(ratios), "ratio", target=">= 0.5")


def bench_feed(runs: int, rows: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    ratios, flink_rates, local_rates = [], [], []
    for _ in range(runs):
        flink = flink_feed(rows)
        queue = ctx.Queue()
        proc = ctx.Process(target=in_process_feed, args=(rows, queue))
        proc.start()
        local = queue.get(timeout=600)
        proc.join()
        assert flink["rows"] == local["rows"] == rows, (flink, local)
        flink_rates.append(flink["rows"] / flink["seconds"])
        local_rates.append(local["rows"] / local["seconds"])
        ratios.append(flink_rates[-1] / local_rates[-1])
    emit("dl", "feed_rows_per_s_flink", statistics.median(flink_rates), "rows/s", rows=rows)
    emit("dl", "feed_rows_per_s_in_process", statistics.median(local_rates), "rows/s", rows=rows)
    emit("dl", "feed_ratio", statistics.median(ratios), "ratio", target=">= 0.5")


# --- feed from a Table / a DataStream (round 3: Arrow batches vs one record per row) ----------------

def write_feed_csv(path: Path, rows: int) -> None:
    """BENCHMARKS.md "Feed from a Table": 16 features + 1 label, two decimals."""
    with open(path, "w") as fh:
        for i in range(rows):
            features = [((i * 7 + j) % 100) / 100 for j in range(FEATURES)]
            fh.write(",".join(f"{v:.2f}" for v in features) + f",{sum(features):.2f}\n")


def timed_loop(batches, batched: bool) -> dict:
    """training_loop's model and step over rows collated by a DataLoader (tuples of 17 floats) or over
    the batched feed's dicts; wall-clock start/end so that two workers' spans can be joined."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    rows, started = 0, None
    for batch in batches:
        if started is None:
            started = time.time()
        if batched:
            x = torch.stack([batch[f"x{j}"] for j in range(FEATURES)], 1).float()
            y = batch["y"].float()
        else:
            x = torch.stack(batch[:FEATURES], 1).float()
            y = batch[FEATURES].float()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y[:, None])
        loss.backward()
        optimizer.step()
        rows += len(y)
    return {"rows": rows, "start": started, "end": time.time()}


def table_feed_entry(ctx) -> None:
    from torch.utils.data import DataLoader

    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    batched = ctx.get_property("batched") == "1"
    data = pt.get_dataset_from_flink(batch_size=BATCH) if batched else DataLoader(pt.get_dataset_from_flink(),
                                                                                   batch_size=BATCH)
    result = timed_loop(data, batched)
    Path(ctx.get_property("out"), f"worker-{pt.get_rank()}.json").write_text(json.dumps(result))


def flink_table_feed(csv: Path, source: str, feed: str, world: int, batched: bool) -> float:
    """rows/s from the first batch of any worker to the last batch of all, fed from ``source``."""
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

    from dl_on_flink.pytorch import PyTorchClusterConfig, train
    from dl_on_flink.testing import local_env

    out = Path(tempfile.mkdtemp())
    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    config = (PyTorchClusterConfig.new_builder().set_world_size(world).set_node_entry(table_feed_entry)
              .set_property("out", out).set_property("feed", feed).set_property("batched", int(batched)).build())
    names = [f"x{j}" for j in range(FEATURES)] + ["y"]
    builder = Schema.new_builder()
    for name in names:
        builder.column(name, DataTypes.DOUBLE())
    t_env.create_temporary_table("feed", TableDescriptor.for_connector("filesystem").schema(builder.build())
                                 .option("path", str(csv)).format("csv").build())
    if source == "table":
        statement_set = t_env.create_statement_set()
        train(statement_set, config, t_env.from_path("feed"))
        statement_set.execute().wait()
    else:  # the DataStream that the connector's rows become (PyFlink cannot type FileSource's CSV RowData)
        train(env, config, input=t_env.to_data_stream(t_env.from_path("feed")))
        env.execute("datastream feed")
    results = [json.loads(p.read_text()) for p in out.glob("worker-*.json")]
    assert len(results) == world
    return sum(r["rows"] for r in results) / (max(r["end"] for r in results) - min(r["start"] for r in results))


def in_process_table_feed(csv: str, batched: bool, queue) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    rows = [tuple(float(v) for v in line.split(",")) for line in open(csv)]  # read before the clock starts
    if batched:
        columns = np.array(rows).T
        batches = [{f"x{j}": torch.from_numpy(columns[j, k:k + BATCH].copy()) for j in range(FEATURES)}
                   | {"y": torch.from_numpy(columns[FEATURES, k:k + BATCH].copy())} for k in range(0, len(rows), BATCH)]
        queue.put(timed_loop(batches, True))
        return

    class Rows(IterableDataset):
        def __iter__(self):
            return iter(rows)

    queue.put(timed_loop(DataLoader(Rows(), batch_size=BATCH), False))


def bench_table_feed(runs: int, rows: int) -> None:
    csv = Path(tempfile.mkdtemp()) / "feed.csv"
    write_feed_csv(csv, rows)
    ctx = multiprocessing.get_context("spawn")
    configs = [("table", "arrow", 1, False), ("table", "row", 1, False), ("table", "arrow", 2, False),
               ("table", "row", 2, False), ("datastream", "arrow", 1, False), ("datastream", "row", 1, False),
               ("table", "arrow", 1, True)]
    rates: dict[tuple, list[float]] = {c: [] for c in configs}
    local: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for batched in (False, True):
            queue = ctx.Queue()
            proc = ctx.Process(target=in_process_table_feed, args=(str(csv), batched, queue))
            proc.start()
            result = queue.get(timeout=600)
            proc.join()
            local[batched].append(result["rows"] / (result["end"] - result["start"]))
        for config in configs:
            rates[config].append(flink_table_feed(csv, *config))
    for batched, values in local.items():
        emit("dl", f"feed_in_process{'_batched' if batched else ''}_rows_per_s", statistics.median(values), "rows/s",
             rows=rows)
    for (source, feed, world, batched), values in rates.items():
        label = f"feed_{source}_{feed}_world{world}{'_batched' if batched else ''}"
        baseline = statistics.median(local[batched])
        emit("dl", f"{label}_rows_per_s", statistics.median(values), "rows/s", rows=rows)
        emit("dl", f"{label}_ratio", statistics.median(values) / baseline, "ratio",
             target=">= 0.5" if not batched else "")


# --- channel ----------------------------------------------------------------------------------------

ROW_BYTES = 1024


def _channel_reader(endpoint: str, queue) -> None:
    from dl_on_flink.framework.channel import Receiver, RowReader
    from dl_on_flink.framework.codec import RowCodec, Schema

    receiver = Receiver(endpoint, bind=False)
    reader = RowReader(receiver, RowCodec(Schema([("payload", "BYTES")])), timeout=60)
    count = sum(1 for _ in reader)
    queue.put((count, time.perf_counter()))
    receiver.close()


def _channel_writer(endpoint: str, rows: int, queue, ready) -> None:
    from dl_on_flink.framework.channel import RowWriter, Sender
    from dl_on_flink.framework.codec import RowCodec, Schema

    sender = Sender(endpoint, bind=False)
    writer = RowWriter(sender, RowCodec(Schema([("payload", "BYTES")])))
    payload = os.urandom(ROW_BYTES)
    ready.put("ready")
    queue.get()  # start signal
    for _ in range(rows):
        writer.write((payload,))
    writer.close()
    sender.close()
    import zmq

    zmq.Context.instance().term()


def channel_to_child(rows: int) -> float:
    from dl_on_flink.framework.channel import END_OF_EPOCH, END_OF_INPUT, FrameBuilder, Sender
    from dl_on_flink.framework.codec import RowCodec, Schema

    ctx = multiprocessing.get_context("spawn")
    endpoint = f"ipc://{tempfile.mkdtemp()}/in"
    sender = Sender(endpoint, bind=True)
    queue = ctx.Queue()
    proc = ctx.Process(target=_channel_reader, args=(endpoint, queue))
    proc.start()
    codec, frames, payload = RowCodec(Schema([("payload", "BYTES")])), FrameBuilder(), os.urandom(ROW_BYTES)
    sender.send(END_OF_EPOCH, timeout=60)  # the reader is connected and reading: start the clock
    started = time.perf_counter()
    for _ in range(rows):
        frame = frames.add(codec.encode((payload,)))
        if frame is not None:
            sender.send(frame)
    sender.send(frames.take())
    sender.send(END_OF_INPUT)
    count, finished = queue.get(timeout=600)
    proc.join()
    sender.close()
    assert count == rows
    return rows * ROW_BYTES / (finished - started) / 1e6


def channel_from_child(rows: int) -> float:
    from dl_on_flink.framework.channel import DATA, END_OF_OUTPUT, Receiver, iter_rows
    from dl_on_flink.framework.codec import RowCodec, Schema

    ctx = multiprocessing.get_context("spawn")
    endpoint = f"ipc://{tempfile.mkdtemp()}/out"
    receiver = Receiver(endpoint, bind=True)
    queue, ready = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_channel_writer, args=(endpoint, rows, queue, ready))
    proc.start()
    decode = RowCodec(Schema([("payload", "BYTES")]), arrays_as="list").decode
    ready.get(timeout=120)  # the writer process is up and connected
    time.sleep(0.2)
    queue.put("go")
    count, started = 0, time.perf_counter()
    while True:
        frame = receiver.recv(60)
        if frame[:1] == DATA:
            for row in iter_rows(frame):
                decode(row)
                count += 1
        elif frame[:1] == END_OF_OUTPUT:
            break
    elapsed = time.perf_counter() - started
    proc.join()
    receiver.close()
    assert count == rows
    return rows * ROW_BYTES / elapsed / 1e6


def bench_channel(runs: int, rows: int) -> None:
    to_child = statistics.median(channel_to_child(rows) for _ in range(runs))
    from_child = statistics.median(channel_from_child(rows) for _ in range(runs))
    emit("dl", "channel_operator_to_child", to_child, "MB/s", row_bytes=ROW_BYTES, target=">= 200")
    emit("dl", "channel_child_to_operator", from_child, "MB/s", row_bytes=ROW_BYTES)


# --- transport: ZeroMQ ipc vs a shared-memory ring -------------------------------------------------

RING_SLOTS, RING_SLOT = 8, 136 * 1024


def _frames(rows: int) -> list[bytes]:
    from dl_on_flink.framework.channel import FrameBuilder

    builder, payload, out = FrameBuilder(), os.urandom(ROW_BYTES), []
    for _ in range(rows):
        frame = builder.add(b"\0" + len(payload).to_bytes(4, "little") + payload)
        if frame is not None:
            out.append(frame)
    out.append(builder.take())
    return [f for f in out if f]


def _count_rows(frame: bytes) -> int:
    from dl_on_flink.framework.channel import iter_rows

    return sum(1 for row in iter_rows(frame) if bytes(row))


def _ring_consumer(name: str, queue) -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    view, tail, count = shm.buf, 0, 0
    while True:
        if int.from_bytes(view[0:8], "little") == tail:
            time.sleep(0)
            continue
        base = 16 + (tail % RING_SLOTS) * RING_SLOT
        length = int.from_bytes(view[base : base + 4], "little")
        if length == 0:
            break
        frame = bytes(view[base + 4 : base + 4 + length])
        tail += 1
        view[8:16] = tail.to_bytes(8, "little")
        count += _count_rows(frame)
    queue.put((count, time.perf_counter()))
    del view
    shm.close()


def transport_ring(rows: int) -> float:
    from multiprocessing import shared_memory

    ctx = multiprocessing.get_context("spawn")
    shm = shared_memory.SharedMemory(create=True, size=16 + RING_SLOTS * RING_SLOT)
    view = shm.buf
    view[0:16] = bytes(16)
    queue = ctx.Queue()
    proc = ctx.Process(target=_ring_consumer, args=(shm.name, queue))
    proc.start()
    frames = _frames(rows) + [b""]
    time.sleep(2)
    head, started = 0, time.perf_counter()
    for frame in frames:
        while head - int.from_bytes(view[8:16], "little") >= RING_SLOTS:
            time.sleep(0)
        base = 16 + (head % RING_SLOTS) * RING_SLOT
        view[base : base + 4] = len(frame).to_bytes(4, "little")
        view[base + 4 : base + 4 + len(frame)] = frame
        head += 1
        view[0:8] = head.to_bytes(8, "little")
    count, finished = queue.get(timeout=600)
    proc.join()
    del view
    shm.close()
    shm.unlink()
    assert count == rows
    return rows * ROW_BYTES / (finished - started) / 1e6


def _zmq_consumer(endpoint: str, queue) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    count = 0
    while frame := sock.recv():
        count += _count_rows(frame)
    queue.put((count, time.perf_counter()))
    sock.close()


def transport_zmq(rows: int) -> float:
    from dl_on_flink.framework.channel import Sender

    ctx = multiprocessing.get_context("spawn")
    sender = Sender(f"ipc://{tempfile.mkdtemp()}/t", bind=True)
    queue = ctx.Queue()
    proc = ctx.Process(target=_zmq_consumer, args=(sender.endpoint, queue))
    proc.start()
    frames = _frames(rows) + [b""]
    time.sleep(2)
    started = time.perf_counter()
    for frame in frames:
        sender.send(frame)
    count, finished = queue.get(timeout=600)
    proc.join()
    sender.close()
    assert count == rows
    return rows * ROW_BYTES / (finished - started) / 1e6


def bench_transport(runs: int, rows: int) -> None:
    zmq_rates, ring_rates = [], []
    for _ in range(runs):  # interleaved, so both see the same machine load
        zmq_rates.append(transport_zmq(rows))
        ring_rates.append(transport_ring(rows))
    emit("dl", "transport_zmq_ipc", statistics.median(zmq_rates), "MB/s", row_bytes=ROW_BYTES)
    emit("dl", "transport_shm_ring_spinning", statistics.median(ring_rates), "MB/s", row_bytes=ROW_BYTES)


# --- DDP ratio ----------------------------------------------------------------------------------------

def ddp_train(rank: int, world_size: int, steps: int) -> float:
    """DDP linear regression for a fixed number of steps (torch.distributed already initialised)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch.manual_seed(rank)
    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    started = time.perf_counter()
    for _ in range(steps):
        x = torch.rand(64, 1) * 2 - 1
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), 2 * x + 1).backward()
        optimizer.step()
    return time.perf_counter() - started


def ddp_entry(ctx) -> None:
    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    seconds = ddp_train(pt.get_rank(), pt.get_world_size(), int(ctx.get_property("steps")))
    if pt.get_rank() == 0:
        Path(ctx.get_property("out")).write_text(json.dumps({"train_s": seconds}))


def _mp_worker(rank: int, world_size: int, port: int, steps: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    seconds = ddp_train(rank, world_size, steps)
    if rank == 0:
        queue.put(seconds)
    dist.destroy_process_group()


def ddp_flink(steps: int) -> tuple[float, float]:
    from dl_on_flink.pytorch import PyTorchClusterConfig, train
    from dl_on_flink.testing import local_env

    out = Path(tempfile.mkdtemp()) / "ddp.json"
    env = local_env()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(ddp_entry)
              .set_property("steps", steps).set_property("out", out).build())
    train(env, config)
    started = time.perf_counter()
    env.execute("ddp")
    return time.perf_counter() - started, json.loads(out.read_text())["train_s"]


def ddp_multiprocessing(steps: int) -> tuple[float, float]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # the baseline picks its port the usual (racy) way; fine for a benchmark
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    started = time.perf_counter()
    mp.spawn(_mp_worker, args=(2, port, steps, queue), nprocs=2, join=True)
    return time.perf_counter() - started, queue.get()


def bench_ddp(runs: int, steps: int) -> None:
    ratios, startups, flink_walls, mp_walls = [], [], [], []
    for _ in range(runs):
        flink_wall, flink_train = ddp_flink(steps)
        mp_wall, mp_train = ddp_multiprocessing(steps)
        ratios.append(flink_train / mp_train)
        startups.append(flink_wall - flink_train)
        flink_walls.append(flink_wall)
        mp_walls.append(mp_wall)
    emit("dl", "ddp_train_ratio", statistics.median(ratios), "ratio", steps=steps, target="<= 1.15")
    emit("dl", "ddp_flink_startup_and_teardown", statistics.median(startups), "s", target="<= 15")
    emit("dl", "ddp_wall_flink", statistics.median(flink_walls), "s", steps=steps)
    emit("dl", "ddp_wall_multiprocessing", statistics.median(mp_walls), "s", steps=steps)


# --- inference: a streaming scoring job (af.predict on the flink engine) vs the model in-process ------

SCORE_BATCH = 1000  # PyFlink's default python.fn-execution.arrow.batch.size: the batches the model sees


class ScoringModel:
    """The quickstart's CTR network shape: 5 features → 16 → 1, sigmoid; rows [id, x1..x5]."""

    def __init__(self) -> None:
        import torch

        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()

    def _scores(self, features):
        import numpy as np
        import torch

        torch.set_num_threads(1)
        with torch.no_grad():
            return torch.sigmoid(self.net(torch.as_tensor(np.asarray(features), dtype=torch.float32))).numpy().ravel()

    def predict(self, row):
        return [int(row[0]), round(float(self._scores([row[1:]])[0]), 5)]

    def predict_batch(self, rows):
        scores = self._scores(rows.iloc[:, 1:].to_numpy())
        return [[int(i), round(float(p), 5)] for i, p in zip(rows.iloc[:, 0], scores, strict=True)]


def scoring_rows(rows: int) -> list[list]:
    return [[k, *(((k * 7 + j) % 100) / 100 for j in range(5))] for k in range(rows)]


def in_process_scoring(rows: int) -> float:
    """rows/s of ScoringModel.predict_batch over the same rows, in batches of SCORE_BATCH (frames made first)."""
    import pandas as pd

    model, data = ScoringModel(), scoring_rows(rows)
    columns = ["id", "x1", "x2", "x3", "x4", "x5"]
    frames = [pd.DataFrame(data[k:k + SCORE_BATCH], columns=columns) for k in range(0, rows, SCORE_BATCH)]
    started = time.perf_counter()
    scored = sum(len(model.predict_batch(frame)) for frame in frames)
    assert scored == rows
    return rows / (time.perf_counter() - started)


def flink_scoring(rows: int, vectorized: bool) -> float:
    """rows/s of a running streaming scoring job: from the file's arrival to its last score committed,
    less one checkpoint interval and one directory-monitor interval (latency, not work)."""
    import aiflow_notebook as af
    from aiflow_notebook.engines.flink_program import CHECKPOINT_INTERVAL_MS, STREAM_MONITOR_INTERVAL_S
    from aiflow_notebook.engines.model_io import save_model
    from aiflow_notebook.scheduler import EmbeddedScheduler
    from aiflow_notebook.storage.part_files import read_lines
    from aiflow_notebook.testing.sdk import reset_sdk

    home = Path(tempfile.mkdtemp())
    os.environ["AIFLOW_HOME"] = str(home)
    reset_sdk()
    data = home / "data"
    (data / "in").mkdir(parents=True)
    with EmbeddedScheduler() as scheduler:
        scheduler.store.register_model("scoring")
        scheduler.store.register_model_version("scoring", uri=save_model(ScoringModel(), "scoring"))
        with af.workflow("scoring_bench"):
            with af.job_config("serve", engine="flink", streaming=True, properties={"vectorized": vectorized}):
                stream = af.read_dataset("in", uri=str(data / "in"), schema={
                    "id": "int", **{f"x{j}": "float" for j in range(1, 6)}})
                af.write_dataset(af.predict(stream, model="scoring"), "out", uri=str(data / "out"))
        run = scheduler.submit(af.compile("scoring_bench"))
        try:
            run.wait_for("serve", "RUNNING", timeout=300)
            time.sleep(8)  # the Flink job itself up (RUNNING is the process)
            staged = data / "staged.csv"
            staged.write_text("".join(",".join(str(v) for v in row) + "\n" for row in scoring_rows(rows)))
            started = time.perf_counter()
            staged.rename(data / "in" / "rows.csv")
            while len(read_lines(data / "out")) < rows:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started - CHECKPOINT_INTERVAL_MS / 1000 - STREAM_MONITOR_INTERVAL_S
        finally:
            run.stop()
    return rows / elapsed


def bench_inference(runs: int, rows: int) -> None:
    local, batched, per_row = [], [], []
    for _ in range(runs):
        local.append(in_process_scoring(rows))
        batched.append(flink_scoring(rows, vectorized=True))
        per_row.append(flink_scoring(rows // 4, vectorized=False))
    base = statistics.median(local)
    emit("dl", "inference_in_process_batched_rows_per_s", base, "rows/s", batch=SCORE_BATCH, rows=rows)
    emit("dl", "inference_flink_vectorized_rows_per_s", statistics.median(batched), "rows/s", rows=rows)
    emit("dl", "inference_flink_row_by_row_rows_per_s", statistics.median(per_row), "rows/s", rows=rows // 4)
    emit("dl", "inference_ratio", statistics.median(batched) / base, "ratio", target=">= 0.5")
    emit("dl", "inference_ratio_row_by_row", statistics.median(per_row) / base, "ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--feed-rows", type=int, default=100_000)
    parser.add_argument("--channel-rows", type=int, default=100_000)
    parser.add_argument("--ddp-steps", type=int, default=3000)
    parser.add_argument("--table-rows", type=int, default=200_000)
    parser.add_argument("--score-rows", type=int, default=200_000)
    parser.add_argument("--only", choices=["transport", "channel", "feed", "table_feed", "inference", "ddp"],
                        action="append")
    args = parser.parse_args()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    only = set(args.only or ["transport", "channel", "feed", "ddp"])
    if "transport" in only:
        bench_transport(args.runs, args.channel_rows)
    if "channel" in only:
        bench_channel(args.runs, args.channel_rows)
    if "feed" in only:
        bench_feed(args.runs, args.feed_rows)
        bench_batched_feed(args.runs, args.feed_rows * 4)
    if "table_feed" in only:
        bench_table_feed(args.runs, args.table_rows)
    if "inference" in only:
        bench_inference(args.runs, args.score_rows)
    if "ddp" in only:
        bench_ddp(args.runs, args.ddp_steps)


if __name__ == "__main__":
    main()
