"""Blocks that train at the same time: K decoupled blocks over S stage processes, pipelined.

Stages are consecutive groups of blocks with their heads. Each stage is a process that owns its
device, its blocks and its part of the optimiser. At tick t, stage s runs its blocks on the batch
that stage s-1 finished at tick t-1 and updates its own parameters; stage s lags stage s-1 by
one tick, and the fill and drain at an epoch's edges are the pipeline's bubble.

Why it is exact. With the stop-gradient between blocks, stage s's t-th update sees the input
that stage s-1 computed with its own t-th parameters: the same input, parameters and gradient as
block s in ``Trainer.train_step``. Adam is per parameter: a stage stepping the whole optimiser
with only its own gradients set updates its parameters exactly as the sequential step does (a
parameter without a gradient is skipped). BatchNorm's statistics are updated by each block's own
forward, in the same order. The first stage draws the batches and augmentations as ``Trainer``
does, from the same random state. So a pipelined run gives the sequential run's parameters,
losses and kept ratios: bit-equal on a CPU with the same thread count per block (the same
kernels in the same order); within float reduction order elsewhere.

``PipelinedTrainer`` wraps a ``Trainer``: ``train_epoch`` runs one epoch over the stages, then
the stages hand their blocks, optimiser state and random state back, so that the wrapped trainer
is exactly a sequential trainer after the same epochs: its checkpoints, kNN monitor, linear
evaluation, probes and spectra are the sequential ones, and a checkpoint of either continues in
the other. Activations go forward between stages with ``torch.distributed`` point to point:
gloo between CPU processes (or processes sharing one GPU, through the host), NCCL between GPUs.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from trainables.errors import ConfigError
from trainables.specs import PARTITIONS
from trainables.specs import check_stages as check_stages_K
from trainables.trainer import STEP_METRICS, Trainer, match_parameter_layout

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STAGE_TIMEOUT_S = 600.0  # a send or receive waiting this long fails (a dead stage is seen
# sooner, by its exit code or its closed socket; a slow one may take a while to fill the pipe)
PARENT_CHECK_S = 1.0  # an idle stage looks this often whether its trial process still lives


class PipelineError(RuntimeError):
    """A stage process died or failed: the step, the epoch and the run fail with its reason."""


# -- the partition -----------------------------------------------------------------------------
def check_stages(K: int, stages: int, device: str = "cpu") -> None:
    """One line for what cannot run: fewer than one stage, more stages than blocks, more stages
    than the GPUs visible (on CUDA)."""
    check_stages_K(K, stages)
    if device.startswith("cuda") and stages > 1:
        visible = torch.cuda.device_count()
        if stages > visible:
            raise ConfigError(f"stages={stages} needs a GPU each; {visible} visible "
                              f"(CUDA_VISIBLE_DEVICES)")


def even_partition(K: int, stages: int) -> list[int]:
    """Blocks per stage, as even as K allows (the first stages take one more)."""
    base, extra = divmod(K, stages)
    return [base + (i < extra) for i in range(stages)]


def balanced_partition(costs: Sequence[float], stages: int) -> list[int]:
    """Blocks per stage, consecutive, minimising the slowest stage's summed cost (exact: a
    dynamic programme over the cut points)."""
    K = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[s][k]: the least max-stage cost of the first k blocks over s stages.
    best = [[inf] * (K + 1) for _ in range(stages + 1)]
    cut = [[0] * (K + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for k in range(s, K + 1):
            for j in range(s - 1, k):
                cost = max(best[s - 1][j], prefix[k] - prefix[j])
                if cost < best[s][k]:
                    best[s][k], cut[s][k] = cost, j
    sizes, k = [], K
    for s in range(stages, 0, -1):
        j = cut[s][k]
        sizes.append(k - j)
        k = j
    return sizes[::-1]


def check_partition(sizes: Sequence[int], K: int) -> list[int]:
    sizes = list(sizes)
    if sum(sizes) != K or any(n < 1 for n in sizes):
        raise ConfigError(f"partition {sizes} must give every stage at least one block and "
                          f"sum to K={K}")
    return sizes


def stage_blocks(sizes: Sequence[int]) -> list[range]:
    """The blocks (0-based) of each stage."""
    out, start = [], 0
    for n in sizes:
        out.append(range(start, start + n))
        start += n
    return out


def describe_partition(sizes: Sequence[int], costs: Sequence[float] | None = None) -> str:
    """``blocks 1-3 | 4-8`` and, with costs, each stage's share of the step."""
    parts = []
    for blocks in stage_blocks(sizes):
        name = f"{blocks[0] + 1}" + (f"-{blocks[-1] + 1}" if len(blocks) > 1 else "")
        if costs is not None:
            name += f" ({sum(costs[k] for k in blocks) * 1e3:.0f} ms)"
        parts.append(name)
    return "blocks " + " | ".join(parts)


def block_seconds(trainer: Trainer, reps: int = 2) -> list[float]:
    """Each block's forward, local loss and backward on one training batch, with its head, in
    seconds (the mean of ``reps`` after one warm-up). Timed on a copy of the model and on the
    first images un-augmented: the run's parameters, statistics and random state are untouched."""
    import copy

    model = copy.deepcopy(trainer.model)
    steps, batch = trainer.epoch_shape()
    x = trainer.normalize(trainer.data.pretrain[:batch])
    x = torch.cat([x, x]).contiguous(memory_format=trainer.memory_format)
    totals = [0.0] * trainer.cfg.K
    for rep in range(reps + 1):
        h = x
        for k in range(trainer.cfg.K):
            _sync(trainer.device)
            start = time.perf_counter()
            h, out = trainer.block_step(k, h, model=model)
            out.loss.backward()
            _sync(trainer.device)
            if rep > 0:
                totals[k] += time.perf_counter() - start
        model.zero_grad(set_to_none=True)
    return [t / reps for t in totals]


def plan_partition(trainer: Trainer, stages: int, partition: str | Sequence[int] = "auto",
                   gpu_each: bool = True) -> tuple[list[int], list[float] | None]:
    """Blocks per stage: ``even``, ``auto`` (balanced on measured block step times), or given;
    with the measured times where they were measured. ``gpu_each``: on CUDA, a GPU a stage."""
    K = trainer.cfg.K
    check_stages(K, stages, "cuda" if trainer.cuda and gpu_each else "cpu")
    if not isinstance(partition, str):
        return check_partition(partition, K), None
    if partition not in PARTITIONS:
        raise ConfigError(f"partition={partition!r} is unknown; allowed: {', '.join(PARTITIONS)}"
                          f" (or blocks per stage)")
    if partition == "even" or stages == 1:
        return even_partition(K, stages), None
    costs = block_seconds(trainer)
    return balanced_partition(costs, stages), costs


# -- the parent's side ---------------------------------------------------------------------------
@dataclass
class StageTimes:
    """One stage's epoch: seconds computing its blocks, waiting for (and receiving) its input,
    sending its output; the epoch's span on the system's monotonic clock."""

    compute: float
    recv: float
    send: float
    start: float
    end: float


@dataclass
class EpochStats:
    steps: int
    seconds: float  # the pipelined epoch, first stage's start to last stage's end
    stages: list[StageTimes] = field(default_factory=list)

    @property
    def ideal(self) -> float:
        """The speed-up a perfectly overlapped pipeline of these stages would reach: the sum of
        the stages' compute over the slowest stage's."""
        compute = [s.compute for s in self.stages]
        return sum(compute) / max(compute)

    @property
    def bubble(self) -> float:
        """The share of the epoch the slowest stage did not compute: fill, drain and waits."""
        return 1.0 - max(s.compute for s in self.stages) / self.seconds


class PipelinedTrainer:
    """A ``Trainer`` whose epochs run over S stage processes; S = 1 is the trainer itself."""

    def __init__(self, trainer: Trainer, stages: int, partition: str | Sequence[int] = "auto",
                 threads: int | None = None, devices: Sequence[str] | None = None):
        self.trainer = trainer
        self.sizes, self.costs = plan_partition(trainer, stages, partition,
                                                gpu_each=devices is None)
        self.stats: list[EpochStats] = []
        self._procs: list = []
        self._commands: list = []
        self._store = None  # the stages' rendezvous, held while they run
        if stages == 1:
            return
        if devices is None:
            devices = ([f"cuda:{i}" for i in range(stages)] if trainer.cuda
                       else ["cpu"] * stages)
        # torch.cuda.set_device wants an index: "cuda" is the current GPU, cuda:0 here.
        devices = ["cuda:0" if d == "cuda" else d for d in devices]
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // stages) if not trainer.cuda else 1
        self._start(list(devices), threads)

    @property
    def stages(self) -> int:
        return len(self.sizes)

    def describe(self) -> str:
        return describe_partition(self.sizes, self.costs)

    def _start(self, devices: list[str], threads: int) -> None:
        ctx = torch.multiprocessing.get_context("spawn")
        backend = "nccl" if all(d.startswith("cuda") for d in devices) and \
            len(set(devices)) == len(devices) else "gloo"
        # The rendezvous store is the parent's, on a port the system gave it and held until
        # the pipeline closes: two trials' pipelines starting at once never meet on one port.
        self._store = _rendezvous()
        port = self._store.port
        # The run's state as bytes: the stages get copies, never tensors shared with the run
        # (a queue or a spawn argument shares a CPU tensor's memory, and Adam steps in place).
        buffer = io.BytesIO()
        torch.save(self.trainer.state_dict(), buffer)
        state = buffer.getvalue()
        # Only the first stage draws batches: the others get the data set's shape, not its
        # images (STL-10's unlabeled part is 2.7 GB a copy, on each stage's device).
        data = self.trainer.data.to("cpu")
        empty = replace(data, **{f.name: torch.empty((0, *t.shape[1:]), dtype=t.dtype)
                                 for f in fields(data)
                                 if torch.is_tensor(t := getattr(data, f.name))})
        self._results = ctx.Queue()
        self._commands = [ctx.Queue() for _ in devices]
        for rank, device in enumerate(devices):
            blocks = stage_blocks(self.sizes)[rank]
            proc = ctx.Process(
                target=_stage_main, daemon=True,
                args=(rank, len(devices), port, backend, device, threads,
                      (blocks.start, blocks.stop), self._commands[rank], self._results,
                      data if rank == 0 else empty, state),
            )
            proc.start()
            self._procs.append(proc)
        for _ in devices:
            self._receive("ready")

    def train_epoch(self) -> dict:
        """One pipelined epoch; the wrapped trainer then holds its state and its record."""
        if self.stages == 1:
            return self.trainer.train_epoch()
        shape = self.trainer.epoch_shape()  # steps and batch size, for the stages without data
        for q in self._commands:
            q.put(("epoch", shape))
        parts = sorted((self._receive("epoch") for _ in self._procs), key=lambda p: p["rank"])
        t = self.trainer
        rows: list[list[float]] = []
        model = t.model.state_dict()
        optimizer = t.optimizer.state_dict()
        for part in parts:
            model.update(part["model"])
            optimizer["state"].update(part["optimizer"])
            rows += part["means"]
        t.model.load_state_dict(model)
        t.optimizer.load_state_dict(optimizer)
        match_parameter_layout(t.optimizer)
        _restore_random(t, parts[0]["random"])
        times = [StageTimes(**p["times"]) for p in parts]
        stats = EpochStats(parts[0]["steps"], max(s.end for s in times)
                           - min(s.start for s in times), times)
        self.stats.append(stats)
        # On CUDA, the memory of the stage that peaked highest.
        top = max(parts, key=lambda p: p["peak"] or 0)
        record = t.end_epoch(rows, stats.seconds, stats.steps, parts[0]["batch"],
                             top["resident"], peak=top["peak"])
        # The pipeline's own figures, in the run's history and its tracked metrics.
        record["pipeline_ideal"], record["pipeline_bubble"] = stats.ideal, stats.bubble
        return record

    def fit(self, epochs: int | None = None, on_epoch=None, checkpoint=None) -> list[dict]:
        """``Trainer.fit`` with pipelined epochs: saves the same checkpoint after each."""
        return self.trainer.fit(epochs, on_epoch, checkpoint, train_epoch=self.train_epoch)

    def _receive(self, kind: str) -> dict:
        """The next message from a stage; a stage that died or failed ends the wait with its
        reason, never a hang."""
        while True:
            try:
                what, rank, payload = self._results.get(timeout=0.5)
            except queue.Empty:
                self._check_alive()
                continue
            except (OSError, EOFError) as e:  # a stage killed while it wrote to the queue
                time.sleep(0.5)
                self._check_alive()
                self.close()
                raise PipelineError(f"a stage's results were cut off: {e}") from None
            if what == "error":
                time.sleep(0.5)  # a stage killed by a signal is the cause; others lost its link
                self._check_alive(signalled_only=True)
                self.close()
                raise PipelineError(f"stage {rank + 1} of {self.stages} failed: {payload}")
            if what != kind:
                self.close()
                raise PipelineError(f"stage {rank + 1}: expected {kind!r}, got {what!r}")
            return {"rank": rank, **payload} if isinstance(payload, dict) else {"rank": rank}

    def _check_alive(self, signalled_only: bool = False) -> None:
        if not self._procs:
            raise PipelineError("the pipeline's stages were stopped (closed)")
        procs = sorted(enumerate(self._procs), key=lambda rp: (rp[1].exitcode or 0) >= 0)
        for rank, proc in procs:
            if signalled_only and (proc.exitcode is None or proc.exitcode >= 0):
                continue
            if proc.exitcode is not None:
                code = proc.exitcode
                self.close()
                how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise PipelineError(f"stage {rank + 1} of {self.stages} (pid {proc.pid}) {how}; "
                                    f"the step could not complete")

    def close(self) -> None:
        """Stop the stage processes (a dead or stuck one is terminated)."""
        procs, self._procs = self._procs, []
        for proc, q in zip(procs, self._commands):
            if proc.exitcode is None:
                try:
                    q.put(("stop", None))
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + 5
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        self._store = None

    def __enter__(self) -> PipelinedTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_procs", None):
            try:
                self.close()
            except Exception:  # at interpreter exit the queues may be gone; daemons end anyway
                pass


def _restore_random(trainer: Trainer, random_state: dict) -> None:
    torch.set_rng_state(random_state["cpu"])
    version, internal, gauss = random_state["augment"]
    trainer.augment.rng.setstate((version, tuple(internal), gauss))
    if trainer.cuda and random_state.get("cuda") is not None:
        torch.cuda.set_rng_state(random_state["cuda"], trainer.device)


def _rendezvous():
    """A TCP store for the stages' process group, served by this process on a free port."""
    from datetime import timedelta

    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=STAGE_TIMEOUT_S))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- a stage process ------------------------------------------------------------------------------
def _stage_main(rank: int, world: int, port: int, backend: str, device: str, threads: int,
                blocks: tuple[int, int], commands, results, data, state: dict) -> None:
    try:
        _stage_loop(rank, world, port, backend, device, threads, range(*blocks), commands,
                    results, data, state)
    except Exception as e:  # the parent says which stage failed and why, in one line
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        results.put(("error", rank, last))
        raise SystemExit(1) from None


def _stage_loop(rank, world, port, backend, device, threads, blocks: range, commands, results,
                data, state) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    from trainables.config import TrainConfig

    torch.set_num_threads(threads)
    state = torch.load(io.BytesIO(state), map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_dict({**state["config"], "device": device})
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    trainer = Trainer(cfg, data)
    trainer.load_state_dict(state)
    timeout = timedelta(seconds=STAGE_TIMEOUT_S)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    link = _Link(rank, world, trainer.device, backend, trainer.memory_format)
    results.put(("ready", rank, None))
    parent = multiprocessing.parent_process()
    try:
        while True:
            try:
                command, shape = commands.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                # A trial process killed outright (SIGKILL, out of memory) never says stop:
                # its stages end on their own instead of holding memory and devices.
                if parent is not None and not parent.is_alive():
                    return
                continue
            if command == "stop":
                return
            results.put(("epoch", rank, _stage_epoch(trainer, rank, world, blocks, link,
                                                     shape)))
    finally:
        dist.destroy_process_group()


def _stage_epoch(trainer: Trainer, rank: int, world: int, blocks: range, link: _Link,
                 shape: tuple[int, int]) -> dict:
    t = trainer
    first, last = rank == 0, rank == world - 1
    if first:
        batches, steps, batch = t.epoch_batches()
    else:
        t.model.train()
        (steps, batch), batches = shape, iter(())
    resident = t.reset_peak_memory()
    totals = torch.zeros(len(blocks), len(STEP_METRICS), device=t.device)
    compute = recv = send = 0.0
    start = time.monotonic()
    for _ in range(steps):
        mark = time.perf_counter()
        if first:
            h = t.views(next(batches))
        else:
            h = link.recv()
            recv += time.perf_counter() - mark
            mark = time.perf_counter()
        t.optimizer.zero_grad(set_to_none=True)
        h, rows = t.run_blocks(blocks, h)
        _sync(t.device)  # the clock reads the device's work, not its launch
        compute += time.perf_counter() - mark
        if not last:
            mark = time.perf_counter()
            link.send(h.detach())
            send += time.perf_counter() - mark
        mark = time.perf_counter()
        t.optimizer.step()  # only this stage's parameters have gradients
        totals += rows
        _sync(t.device)
        compute += time.perf_counter() - mark
    means = (totals / steps).tolist()  # also waits for the device
    link.flush()
    end = time.monotonic()
    own = set()
    for k in blocks:
        own |= {f"blocks.{k}.{n}" for n in t.model.blocks[k].state_dict()}
        own |= {f"heads.{k}.{n}" for n in t.model.heads[k].state_dict()}
    # Copies, never the live tensors: a queue shares a CPU tensor's memory with the receiver,
    # and this stage trains on in place while the run holds what it received.
    model = {n: v.detach().to("cpu", copy=True) for n, v in t.model.state_dict().items()
             if n in own}
    params = [p for k in blocks for m in (t.model.blocks[k], t.model.heads[k])
              for p in m.parameters()]
    index = {id(p): i for i, p in enumerate(q for g in t.optimizer.param_groups
                                              for q in g["params"])}
    optimizer = {index[id(p)]: {k: v.to("cpu", copy=True) if torch.is_tensor(v) else v
                                for k, v in t.optimizer.state[p].items()}
                 for p in params if p in t.optimizer.state}
    peak = torch.cuda.max_memory_allocated(t.device) if t.cuda else None
    out = {"means": means, "steps": steps, "batch": batch, "model": model,
           "optimizer": optimizer, "peak": peak, "resident": resident,
           "times": {"compute": compute, "recv": recv, "send": send, "start": start,
                     "end": end}}
    if first:
        out["random"] = {"cpu": torch.get_rng_state(), "augment": t.augment.rng.getstate(),
                         "cuda": torch.cuda.get_rng_state(t.device) if t.cuda else None}
    return out


class _Link:
    """Point to point between neighbouring stages: a detached activation forward, with its
    shape and dtype sent first once; through the host where gloo carries GPU tensors.

    Activations travel in the run's memory format (channels_last with bf16), which both ends
    share: no layout copy on either side of a tick."""

    def __init__(self, rank: int, world: int, device: torch.device, backend: str,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.rank, self.world, self.device = rank, world, device
        self.memory_format = memory_format
        self.host = backend == "gloo" and device.type == "cuda"
        self.pending = None  # the last send in flight, and its tensor kept alive
        self.announced = False  # the output's shape and dtype went to the next stage
        self.shape: tuple | None = None  # the input's, from the previous stage
        self.dtype = torch.float32

    def send(self, h: torch.Tensor) -> None:
        import torch.distributed as dist

        h = h.contiguous(memory_format=self.memory_format)  # a no-op when it already is
        if self.host:
            h = h.cpu()
        if not self.announced:
            header = torch.tensor([DTYPES.index(h.dtype), *h.shape], dtype=torch.int64)
            dist.send(header.to(h.device), self.rank + 1)
            self.announced = True
        if self.memory_format == torch.channels_last:
            h = h.permute(0, 2, 3, 1)  # NHWC in memory: as gloo wants it, contiguous, no copy
        self.flush()
        self.pending = (dist.isend(h, self.rank + 1), h)

    def recv(self) -> torch.Tensor:
        import torch.distributed as dist

        where = torch.device("cpu") if self.host or self.device.type == "cpu" else self.device
        if self.shape is None:
            header = torch.empty(5, dtype=torch.int64, device=where)
            dist.recv(header, self.rank - 1)
            code, *shape = header.tolist()
            self.dtype, self.shape = DTYPES[code], tuple(shape)
        h = torch.empty(self.shape, dtype=self.dtype, device=where,
                        memory_format=self.memory_format)
        # Into the same memory as it was sent: channels_last's storage seen as NHWC.
        dist.recv(h.permute(0, 2, 3, 1) if self.memory_format == torch.channels_last else h,
                  self.rank - 1)
        return h.to(self.device) if where != self.device else h

    def flush(self) -> None:
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None
