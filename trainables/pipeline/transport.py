"""What passes between the parent and its stage processes, and between neighbouring stages.

Parent to stages, at their start: the run's state as bytes (``pack_state``) and the data set,
its images to the first stage only (``shape_only``); then commands on a queue per stage. Stages
to parent, on one results queue: ``StageHandBack`` after each epoch. Stage to stage: each tick's
activation over ``torch.distributed`` point to point (``Link``), in a process group met at the
parent's TCP store (``serve_rendezvous``, ``join_stages``): gloo between CPU processes (or
processes sharing one GPU, through the host), NCCL between GPUs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainables.data import DataBundle
    from trainables.trainer import Trainer

DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # an activation's, by index in a header
STAGE_TIMEOUT_S = 600.0  # a send or receive waiting this long fails (a dead stage is seen
# sooner, by its exit code or its closed socket; a slow one may take a while to fill the pipe)
PARENT_CHECK_S = 1.0  # an idle stage looks this often whether its trial process still lives


# -- parent to stages -----------------------------------------------------------------------------
def pack_state(state: dict) -> bytes:
    """The run's state as bytes: the stages get copies, never tensors shared with the run (a
    queue or a spawn argument shares a CPU tensor's memory, and Adam steps in place)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack_state(state: bytes) -> dict:
    """``pack_state``'s state back, on the CPU."""
    return torch.load(io.BytesIO(state), map_location="cpu", weights_only=False)


def shape_only(data: DataBundle) -> DataBundle:
    """The data set without its images: for the stages that do not draw batches (STL-10's
    unlabeled part is 2.7 GB a copy, on each stage's device)."""
    return replace(data, **{f.name: torch.empty((0, *t.shape[1:]), dtype=t.dtype)
                            for f in fields(data)
                            if torch.is_tensor(t := getattr(data, f.name))})


# -- stages to parent -----------------------------------------------------------------------------
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
class RandomState:
    """The random state batches and augmentations are drawn from: torch's CPU generator, the
    augmentations' ``random.Random`` and, on CUDA, the device's generator."""

    cpu: torch.Tensor
    augment: tuple
    cuda: torch.Tensor | None = None

    @classmethod
    def of(cls, trainer: Trainer) -> RandomState:
        return cls(torch.get_rng_state(), trainer.augment.rng.getstate(),
                   torch.cuda.get_rng_state(trainer.device) if trainer.cuda else None)

    def restore(self, trainer: Trainer) -> None:
        torch.set_rng_state(self.cpu)
        version, internal, gauss = self.augment
        trainer.augment.rng.setstate((version, tuple(internal), gauss))
        if trainer.cuda and self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, trainer.device)


@dataclass
class StageHandBack:
    """A stage's epoch handed back to the parent: with every stage's, what makes the wrapped
    trainer the sequential trainer after the same epoch. Tensors are copies on the CPU, never the
    stage's live ones: a queue shares a CPU tensor's memory with the receiver, and the stage
    trains on in place while the run holds what it received."""

    rank: int
    steps: int
    batch: int
    means: list[list[float]]  # [its blocks, STEP_METRICS]: the epoch's mean step
    model: dict[str, torch.Tensor]  # its blocks' and heads' state, by name in the model
    optimizer: dict[int, dict]  # its parameters' optimiser state, by index in the optimiser
    times: StageTimes
    resident: int  # bytes resident on its device (CUDA; 0 on a CPU)
    peak: int | None  # its device's peak bytes in the epoch (CUDA; None on a CPU)
    random: RandomState | None = None  # the first stage's: it drew the batches and views


# -- stage to stage -------------------------------------------------------------------------------
def serve_rendezvous():
    """The stages' rendezvous: a TCP store served by the parent on a port the system gave it,
    held until the pipeline closes (two trials' pipelines starting at once never meet on one
    port)."""
    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=STAGE_TIMEOUT_S))


def join_stages(rank: int, world: int, port: int, backend: str) -> None:
    """A stage joins the stages' process group at the parent's store."""
    import torch.distributed as dist

    timeout = timedelta(seconds=STAGE_TIMEOUT_S)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


class Link:
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
        """Wait for the send in flight, if any."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None
