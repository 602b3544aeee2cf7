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
the other.

The modules: ``partition`` (which blocks each stage trains, and the checks before a start),
``parent`` (``PipelinedTrainer``), ``stage`` (a stage process's loop) and ``transport`` (what
passes between the processes: the run's state, activations, ``StageHandBack``).
"""

from trainables.pipeline.parent import EpochStats, PipelinedTrainer, PipelineError
from trainables.pipeline.partition import (
    balanced_partition,
    block_seconds,
    check_partition,
    check_stage_devices,
    describe_partition,
    even_partition,
    plan_partition,
    stage_blocks,
)
from trainables.pipeline.transport import StageHandBack, StageTimes

__all__ = [
    "EpochStats",
    "PipelineError",
    "PipelinedTrainer",
    "StageHandBack",
    "StageTimes",
    "balanced_partition",
    "block_seconds",
    "check_partition",
    "check_stage_devices",
    "describe_partition",
    "even_partition",
    "plan_partition",
    "stage_blocks",
]
