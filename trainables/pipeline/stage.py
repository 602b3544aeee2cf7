"""A stage process: its blocks, its device and its part of the optimiser, trained a tick behind
the stage before it.

``run_stage`` is the process's target (started by ``PipelinedTrainer`` with the spawn context,
so it is imported by this module's path). The stage rebuilds the run's trainer from the parent's
state, joins the stages' process group, then runs an epoch on each ``epoch`` command and hands
it back (``StageHandBack``) until ``stop``, or until its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback

import torch

from trainables.pipeline.transport import (
    PARENT_CHECK_S,
    Link,
    RandomState,
    StageHandBack,
    StageTimes,
    join_stages,
    unpack_state,
)
from trainables.trainer import STEP_METRICS, Trainer


def sync(device: torch.device) -> None:
    """Wait for the device's work, so that a clock reads it rather than its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_stage(rank: int, world: int, port: int, backend: str, device: str, threads: int,
              blocks: tuple[int, int], commands, results, data, state: bytes) -> None:
    """The stage process: blocks ``range(*blocks)`` on ``device``, until told to stop. A failure
    goes to the parent as one line, with the stage's rank."""
    try:
        _stage_loop(rank, world, port, backend, device, threads, range(*blocks), commands,
                    results, data, state)
    except Exception as e:  # the parent says which stage failed and why, in one line
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        results.put(("error", rank, last))
        raise SystemExit(1) from None


def _stage_loop(rank, world, port, backend, device, threads, blocks: range, commands, results,
                data, state: bytes) -> None:
    import torch.distributed as dist

    from trainables.config import TrainConfig

    torch.set_num_threads(threads)
    state = unpack_state(state)
    cfg = TrainConfig.from_dict({**state["config"], "device": device})
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    trainer = Trainer(cfg, data)
    trainer.load_state_dict(state)
    join_stages(rank, world, port, backend)
    link = Link(rank, world, trainer.device, backend, trainer.memory_format)
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


def _stage_epoch(trainer: Trainer, rank: int, world: int, blocks: range, link: Link,
                 shape: tuple[int, int]) -> StageHandBack:
    """One epoch of this stage's blocks, tick by tick: the first stage draws the batches and
    views as ``Trainer`` does, the others receive the previous stage's output."""
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
        sync(t.device)  # the clock reads the device's work, not its launch
        compute += time.perf_counter() - mark
        if not last:
            mark = time.perf_counter()
            link.send(h.detach())
            send += time.perf_counter() - mark
        mark = time.perf_counter()
        t.optimizer.step()  # only this stage's parameters have gradients
        totals += rows
        sync(t.device)
        compute += time.perf_counter() - mark
    means = (totals / steps).tolist()  # also waits for the device
    link.flush()
    end = time.monotonic()
    model, optimizer = _own_state(t, blocks)
    return StageHandBack(
        rank=rank, steps=steps, batch=batch, means=means, model=model, optimizer=optimizer,
        times=StageTimes(compute, recv, send, start, end), resident=resident,
        peak=torch.cuda.max_memory_allocated(t.device) if t.cuda else None,
        random=RandomState.of(t) if first else None,
    )


def _own_state(t: Trainer, blocks: range) -> tuple[dict, dict]:
    """Copies on the CPU of this stage's blocks' and heads' state, by name, and of their
    parameters' optimiser state, by index in the optimiser (as its ``state_dict`` numbers them)."""
    own = set()
    for k in blocks:
        own |= {f"blocks.{k}.{n}" for n in t.model.blocks[k].state_dict()}
        own |= {f"heads.{k}.{n}" for n in t.model.heads[k].state_dict()}
    model = {n: v.detach().to("cpu", copy=True) for n, v in t.model.state_dict().items()
             if n in own}
    params = [p for k in blocks for m in (t.model.blocks[k], t.model.heads[k])
              for p in m.parameters()]
    index = {id(p): i for i, p in enumerate(q for g in t.optimizer.param_groups
                                              for q in g["params"])}
    optimizer = {index[id(p)]: {k: v.to("cpu", copy=True) if torch.is_tensor(v) else v
                                for k, v in t.optimizer.state[p].items()}
                 for p in params if p in t.optimizer.state}
    return model, optimizer
