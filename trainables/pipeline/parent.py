"""The parent's side: ``PipelinedTrainer`` wraps a ``Trainer`` and runs its epochs over the
stage processes.

It plans the partition, starts a stage process per group of blocks, and after each epoch takes
every stage's ``StageHandBack`` into the wrapped trainer (its blocks, optimiser state and the
first stage's random state), so that the trainer is exactly a sequential trainer after the same
epochs. A stage that dies or fails ends the wait with its reason (``PipelineError``), never a
hang.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from trainables.pipeline.partition import describe_partition, plan_partition, stage_blocks
from trainables.pipeline.stage import run_stage
from trainables.pipeline.transport import (
    StageHandBack,
    StageTimes,
    pack_state,
    serve_rendezvous,
    shape_only,
)
from trainables.trainer import Trainer, match_parameter_layout


class PipelineError(RuntimeError):
    """A stage process died or failed: the step, the epoch and the run fail with its reason."""


@dataclass
class EpochStats:
    """A pipelined epoch's speed: its steps, its span and each stage's times."""

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
        self._store = serve_rendezvous()
        port = self._store.port
        state = pack_state(self.trainer.state_dict())
        data = self.trainer.data.to("cpu")
        empty = shape_only(data)  # only the first stage draws batches
        self._results = ctx.Queue()
        self._commands = [ctx.Queue() for _ in devices]
        for rank, device in enumerate(devices):
            blocks = stage_blocks(self.sizes)[rank]
            proc = ctx.Process(
                target=run_stage, daemon=True,
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
        parts: list[StageHandBack] = sorted((self._receive("epoch") for _ in self._procs),
                                            key=lambda p: p.rank)
        t = self.trainer
        rows: list[list[float]] = []
        model = t.model.state_dict()
        optimizer = t.optimizer.state_dict()
        for part in parts:
            model.update(part.model)
            optimizer["state"].update(part.optimizer)
            rows += part.means
        t.model.load_state_dict(model)
        t.optimizer.load_state_dict(optimizer)
        match_parameter_layout(t.optimizer)
        parts[0].random.restore(t)
        times = [p.times for p in parts]
        stats = EpochStats(parts[0].steps, max(s.end for s in times)
                           - min(s.start for s in times), times)
        self.stats.append(stats)
        # On CUDA, the memory of the stage that peaked highest.
        top = max(parts, key=lambda p: p.peak or 0)
        record = t.end_epoch(rows, stats.seconds, stats.steps, parts[0].batch,
                             top.resident, peak=top.peak)
        # The pipeline's own figures, in the run's history and its tracked metrics.
        record["pipeline_ideal"], record["pipeline_bubble"] = stats.ideal, stats.bubble
        return record

    def fit(self, epochs: int | None = None, on_epoch=None, checkpoint=None) -> list[dict]:
        """``Trainer.fit`` with pipelined epochs: saves the same checkpoint after each."""
        return self.trainer.fit(epochs, on_epoch, checkpoint, train_epoch=self.train_epoch)

    def _receive(self, kind: str) -> StageHandBack | None:
        """The next message from a stage, ``kind`` or a failure: its hand-back (None for
        ``ready``); a stage that died or failed ends the wait with its reason, never a hang."""
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
            return payload

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
