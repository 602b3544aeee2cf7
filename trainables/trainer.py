"""Decoupled SimCLR training (Sec. 3.1): each block learns from its own local loss.

Per step, for k = 1..K: ``h = f^k(h.detach())``, ``z = g^k(h)``, the local loss of Eq. (1) or
Eq. (5), backward; block k's graph is freed before block k+1 runs, so memory holds one block's
graph at a time, and the detach is the StopGrad of Table 3. Both views go through the network as
one batch of 2N, so BatchNorm normalises them together.

Nothing in a training step reads the device from the host (augmentation, loss and fused Adam stay
on it), so a GPU never waits for Python. An epoch reads twice, after its steps: their per-block
metrics (which also stops the clock), then the kNN monitor's accuracy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from trainables.augment import Normalize, SimCLRAugment
from trainables.config import TrainConfig
from trainables.data import DataBundle, load_data
from trainables.errors import ConfigError
from trainables.features import knn_accuracy, pooled_features
from trainables.losses import ContrastiveLoss, contrastive_loss
from trainables.models import DecoupledResNet

STEP_METRICS = ("loss", "kept_pos", "kept_neg")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} asked, but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


class Trainer:
    """Owns the model, optimiser, data and history of one run; resumable from a checkpoint."""

    def __init__(self, cfg: TrainConfig, data: DataBundle | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cuda = self.device.type == "cuda"
        # bf16 autocast and channels_last go together: the tensor cores' fast path on CUDA.
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.cuda)
        if self.cuda:
            # Every training step has the same shapes: let cuDNN pick its fastest kernels once.
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        if data is None:
            data = load_data(cfg.dataset, cfg.data_dir, cfg.subset, cfg.download)
        self.data = data.to(self.device)
        spec = data.spec
        model = DecoupledResNet(cfg.arch, cfg.K, spec.channels, spec.stem, cfg.width,
                                head=cfg.head)
        self.memory_format = torch.channels_last if self.bf16 else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.augment = SimCLRAugment(
            (spec.size, spec.size), spec.channels, spec.mean, spec.std, seed=cfg.seed
        ).to(self.device)
        self.normalize = Normalize(spec.mean, spec.std).to(self.device)
        # Fused Adam keeps its step counters on the device; foreach Adam reads them on the host
        # once per parameter per step.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
        )
        self.thresholds = cfg.thresholds  # T_k per block (one T unless threshold_slope)
        self.epoch = 0
        self.history: list[dict] = []

    # -- training ---------------------------------------------------------------------------
    def block_step(
        self, k: int, h: torch.Tensor, model: DecoupledResNet | None = None
    ) -> tuple[torch.Tensor, ContrastiveLoss]:
        """Block k's forward and local loss: ``h^k = f^k(StopGrad(h^{k-1}))``, ``g^k(h^k)``
        (of ``model``, default the run's own: a copy serves to time a block)."""
        model = self.model if model is None else model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            h = model.blocks[k](h.detach())
            z = model.heads[k](h)
        cfg = self.cfg
        return h, contrastive_loss(z, cfg.tau, self.thresholds[k], cfg.subsample)

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """Both augmented views of a uint8 batch as one batch of 2N, in the model's layout."""
        views = torch.cat([self.augment(images), self.augment(images)])
        return views.contiguous(memory_format=self.memory_format)

    def run_blocks(self, blocks: range, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``blocks`` forward and backward, each on its own loss (gradients accumulate;
        no optimiser step): the last block's output and [len(blocks), 3] (loss, kept_pos,
        kept_neg) on the device."""
        rows = []
        for k in blocks:
            h, out = self.block_step(k, h)
            out.loss.backward()  # frees block k's graph before block k+1 runs
            rows.append(torch.cat([out.loss.detach().reshape(1), out.kept]))
        return h, torch.stack(rows)

    def train_step(self, images: torch.Tensor) -> torch.Tensor:
        """One step on a uint8 batch; returns [K, 3] (loss, kept_pos, kept_neg) on the device."""
        h = self.views(images)
        self.optimizer.zero_grad(set_to_none=True)
        _, rows = self.run_blocks(range(self.cfg.K), h)
        self.optimizer.step()
        return rows

    def train_epoch(self) -> dict:
        """One pass over the pre-training images, then the kNN monitor; appends to history."""
        batches, steps, batch = self.epoch_batches()
        resident = self.reset_peak_memory()
        start = time.perf_counter()
        totals = torch.zeros(self.cfg.K, len(STEP_METRICS), device=self.device)
        for images in batches:
            totals += self.train_step(images)
        means = (totals / steps).tolist()  # the steps' one host read: it also ends the clock
        return self.end_epoch(means, time.perf_counter() - start, steps, batch, resident)

    def epoch_batches(self) -> tuple[Iterator[torch.Tensor], int, int]:
        """This epoch's batches of pre-training images (one ``randperm`` draw, as many full
        batches as fit), their count and size."""
        self.model.train()
        images = self.data.pretrain
        steps, batch = self.epoch_shape()
        perm = torch.randperm(len(images), device=self.device)
        return (images[perm[s * batch:(s + 1) * batch]] for s in range(steps)), steps, batch

    def epoch_shape(self) -> tuple[int, int]:
        """Steps per epoch and images per step: as many full batches as fit."""
        n = len(self.data.pretrain)
        batch = min(self.cfg.batch_size, n)
        return n // batch, batch

    def reset_peak_memory(self) -> int:
        """On CUDA, start counting the peak anew; what stays resident (data set, model,
        optimiser) in bytes, 0 on a CPU."""
        if not self.cuda:
            return 0
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def end_epoch(
        self, means: list[list[float]], seconds: float, steps: int, batch: int, resident: int,
        peak: int | None = None,
    ) -> dict:
        """The epoch's record from its per-block step means [K, 3]: kNN monitor when due,
        speed and memory (this process's peak unless ``peak``); appended to the history."""
        if peak is None and self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
        self.epoch += 1
        record = {"epoch": self.epoch}
        for j, name in enumerate(STEP_METRICS):
            record[name] = [row[j] for row in means]
        record["threshold"] = list(self.thresholds)  # T_k beside its block's kept ratios
        due = self.epoch % self.cfg.monitor_every == 0 or self.epoch >= self.cfg.epochs
        record["knn_val_acc"] = self.knn_val_accuracy() if due else None
        record["epoch_seconds"] = seconds
        record["images_per_s"] = 2 * steps * batch / seconds  # two views count as two
        record["step_seconds"] = seconds / steps  # pipelined: the pipeline's step, bubble included
        # None on a CPU. The total includes what stays resident (data set, model, optimiser);
        # the steps' own peak is what Table 1's K = 16 / K = 1 memory ratio is about.
        record["peak_memory_bytes"] = peak
        record["peak_step_memory_bytes"] = None if peak is None else peak - resident
        self.history.append(record)
        return record

    def fit(
        self,
        epochs: int | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        checkpoint: str | Path | None = None,
        train_epoch: Callable[[], dict] | None = None,
    ) -> list[dict]:
        """Train until ``epochs`` (default: the config's) have run, saving after every epoch;
        each epoch by ``train_epoch`` (default this trainer's; a pipeline's runs over stages)."""
        target = self.cfg.epochs if epochs is None else epochs
        while self.epoch < target:
            record = (train_epoch or self.train_epoch)()
            if checkpoint is not None:
                self.save(checkpoint)
            if on_epoch is not None:
                on_epoch(record)
        return self.history

    def knn_val_accuracy(self) -> float:
        """kNN accuracy of the final representation: train-part bank, validation queries (the
        first ``monitor_images`` of each: a fixed random subset, both parts being shuffled). A
        smaller bank keeps the full bank's neighbours per image: k scaled by the bank's share."""
        n = self.cfg.monitor_images
        d = self.data
        bank, = pooled_features(self.model, d.train_x[:n], self.normalize, bf16=self.bf16)
        queries, = pooled_features(self.model, d.val_x[:n], self.normalize, bf16=self.bf16)
        k = max(1, round(self.cfg.knn_k * len(bank) / len(d.train_x)))
        return knn_accuracy(
            bank, d.train_y[:n], queries, d.val_y[:n],
            k=k, temperature=self.cfg.knn_temperature,
            num_classes=self.data.spec.num_classes,
        )

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_augment": self.augment.rng.getstate(),
        }
        if self.cuda:
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])  # copies into the parameters' own layout
        self.optimizer.load_state_dict(state["optimizer"])
        match_parameter_layout(self.optimizer)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_augment" in state:
            version, internal, gauss = state["rng_augment"]
            self.augment.rng.setstate((version, tuple(internal), gauss))
        if self.cuda and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, data: DataBundle | None = None, **overrides
    ) -> Trainer:
        """Rebuild a run from ``path``; ``overrides`` may change e.g. ``epochs`` or ``device``."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TrainConfig.from_dict({**state["config"], **overrides})
        trainer = cls(cfg, data)
        trainer.load_state_dict(state)
        return trainer


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor its parameter's device and memory format.

    A checkpoint saved in fp32 (contiguous) and resumed with channels_last parameters, or the
    other way round, leaves Adam's moments in the old layout, and the fused step refuses
    mismatched strides.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and (
                    value.stride() != p.stride() or value.device != p.device
                ):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
