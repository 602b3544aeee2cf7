"""The partition: which consecutive blocks (with their heads) each stage trains.

Even (``even``, the first stages take one more), balanced on each block's measured step time
(``auto``: the slowest stage is what the pipeline's step costs), or given as blocks per stage.
Checked before anything starts: the K/stages rule is ``trainables.specs``'s, the devices the
stages need are checked here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch

from trainables.errors import ConfigError
from trainables.pipeline.stage import sync
from trainables.specs import PARTITIONS, check_stages
from trainables.trainer import Trainer


def check_stage_devices(K: int, stages: int, device: str = "cpu") -> None:
    """One line for what cannot run: fewer than one stage, more stages than blocks, more stages
    than the GPUs visible (on CUDA, a GPU a stage)."""
    check_stages(K, stages)
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
    """A given partition, as a list, if every stage has a block and all K blocks are trained."""
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
    model = copy.deepcopy(trainer.model)
    steps, batch = trainer.epoch_shape()
    x = trainer.normalize(trainer.data.pretrain[:batch])
    x = torch.cat([x, x]).contiguous(memory_format=trainer.memory_format)
    totals = [0.0] * trainer.cfg.K
    for rep in range(reps + 1):
        h = x
        for k in range(trainer.cfg.K):
            sync(trainer.device)
            start = time.perf_counter()
            h, out = trainer.block_step(k, h, model=model)
            out.loss.backward()
            sync(trainer.device)
            if rep > 0:
                totals[k] += time.perf_counter() - start
        model.zero_grad(set_to_none=True)
    return [t / reps for t in totals]


def plan_partition(trainer: Trainer, stages: int, partition: str | Sequence[int] = "auto",
                   gpu_each: bool = True) -> tuple[list[int], list[float] | None]:
    """Blocks per stage: ``even``, ``auto`` (balanced on measured block step times), or given;
    with the measured times where they were measured. ``gpu_each``: on CUDA, a GPU a stage."""
    K = trainer.cfg.K
    check_stage_devices(K, stages, "cuda" if trainer.cuda and gpu_each else "cpu")
    if not isinstance(partition, str):
        return check_partition(partition, K), None
    if partition not in PARTITIONS:
        raise ConfigError(f"partition={partition!r} is unknown; allowed: {', '.join(PARTITIONS)}"
                          f" (or blocks per stage)")
    if partition == "even" or stages == 1:
        return even_partition(K, stages), None
    costs = block_seconds(trainer)
    return balanced_partition(costs, stages), costs
