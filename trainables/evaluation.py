"""The paper's measurements of a trained encoder (Sec. 4.1, 4.2): linear evaluation, per-block
linear probes (Fig. 2), spectra and effective rank (Fig. 1b).

Everything works on frozen, average-pooled features of un-augmented images, computed once per
split and reused by every classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainables.augment import Normalize
from trainables.data import DataBundle
from trainables.features import pooled_features
from trainables.models import DecoupledResNet
from trainables.paper import PROTOCOL

SPECTRUM_SAMPLES = 2048  # held-out images the covariance is taken over


@dataclass
class LinearResult:
    train_acc: float
    val_acc: float
    test_acc: float


@dataclass
class BlockFeatures:
    """Pooled h^k of every block for the train part, validation split and test set."""

    train: list[torch.Tensor]
    val: list[torch.Tensor]
    test: list[torch.Tensor]

    @classmethod
    def compute(
        cls, model: DecoupledResNet, data: DataBundle, normalize: Normalize,
        bf16: bool = False,
    ) -> BlockFeatures:
        def feats(x):
            return pooled_features(model, x, normalize, all_blocks=True, bf16=bf16)

        return cls(feats(data.train_x), feats(data.val_x), feats(data.test_x))


Split = tuple[torch.Tensor, torch.Tensor]  # (features [N, D], labels [N])


def linear_eval(train: Split, val: Split, test: Split, num_classes: int,
                **options) -> LinearResult:
    """Linear evaluation of one set of frozen features (Sec. 4.1); ``options`` (epochs, lr,
    batch_size, weight_decay, seed, on_epoch) as for ``linear_probes``."""
    (result,) = linear_probes([train[0]], train[1], [val[0]], val[1], [test[0]], test[1],
                              num_classes, **options)
    return result


def linear_probes(
    train_x: list[torch.Tensor],
    train_y: torch.Tensor,
    val_x: list[torch.Tensor],
    val_y: torch.Tensor,
    test_x: list[torch.Tensor],
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int = PROTOCOL.linear_epochs,
    # Sec. 4.1: "the same optimizer and batch size as the self-supervised training".
    lr: float = PROTOCOL.lr,
    batch_size: int = PROTOCOL.batch_size,
    weight_decay: float = PROTOCOL.weight_decay,
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[LinearResult]:
    """One linear classifier per feature set (a block's pooled h^k), trained with Adam and
    cross-entropy for ``epochs`` at the paper's batch size (Sec. 4.1: the pre-training's).

    Features are standardised with the train part's mean and std first (a fixed affine map, so
    still a linear classifier on the representation); weights start at zero. The classifiers
    train together, stacked by feature width into one batched matmul per step, on the same
    minibatches: their parameters are disjoint and Adam acts elementwise, so each ends exactly as
    if trained alone, with one matmul per distinct width per step instead of one per probe.
    Returns the final accuracies; nothing is selected on validation or test.
    """
    device = train_y.device
    stats = [(x.mean(0), x.std(0).clamp_min(1e-6)) for x in train_x]

    def prep(k: int, x: torch.Tensor) -> torch.Tensor:
        return (x - stats[k][0]) / stats[k][1]

    groups: dict[int, list[int]] = {}  # feature width -> the probes of that width
    for k, x in enumerate(train_x):
        groups.setdefault(x.shape[1], []).append(k)
    slot = {k: (gi, j) for gi, ks in enumerate(groups.values()) for j, k in enumerate(ks)}
    stacks = [torch.stack([prep(k, train_x[k]) for k in ks]) for ks in groups.values()]
    weights = [torch.zeros(len(ks), d, num_classes, device=device, requires_grad=True)
               for d, ks in groups.items()]
    biases = [torch.zeros(len(ks), 1, num_classes, device=device, requires_grad=True)
              for ks in groups.values()]
    opt = torch.optim.Adam(weights + biases, lr=lr, weight_decay=weight_decay, fused=True)
    g = torch.Generator(device=device).manual_seed(seed)
    n = len(train_y)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g, device=device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            y = train_y[idx]
            loss = 0.0
            for x, w, b in zip(stacks, weights, biases):
                logits = torch.baddbmm(b, x[:, idx], w)  # [probes, batch, classes]
                # Each probe's mean cross-entropy, summed: every probe gets its own gradient.
                loss = loss + F.cross_entropy(
                    logits.flatten(0, 1), y.repeat(len(x)), reduction="sum") / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)

    @torch.no_grad()
    def accuracy(k: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not len(y):
            return torch.full((), math.nan, device=device)
        gi, j = slot[k]
        logits = prep(k, x) @ weights[gi][j] + biases[gi][j]
        return (logits.argmax(1) == y).float().mean()

    accs = torch.stack([
        torch.stack([accuracy(k, *split) for split in ((x_tr, train_y), (x_va, val_y),
                                                        (x_te, test_y))]).cpu()
        for k, (x_tr, x_va, x_te) in enumerate(zip(train_x, val_x, test_x))
    ]).tolist()  # one read for every probe
    return [LinearResult(*row) for row in accs]


def probe_blocks(
    feats: BlockFeatures, data: DataBundle, epochs: int = PROTOCOL.linear_epochs, seed: int = 0
) -> list[LinearResult]:
    """A linear probe on every block's output h^k (Fig. 2); the last one is linear evaluation."""
    return linear_probes(
        feats.train, data.train_y, feats.val, data.val_y, feats.test, data.test_y,
        data.spec.num_classes, epochs=epochs, seed=seed,
    )


def spectrum(features: torch.Tensor) -> np.ndarray:
    """Singular values of the features' covariance, normalised by the largest (Fig. 1b)."""
    x = features.double()
    x = x - x.mean(0, keepdim=True)
    cov = x.T @ x / max(1, len(x) - 1)
    s = torch.linalg.svdvals(cov).cpu().numpy()
    return s / s[0] if s[0] > 0 else s


def effective_rank(normalised_singular_values: np.ndarray) -> float:
    """RankMe's effective rank: exp of the entropy of the singular values as a distribution."""
    s = np.asarray(normalised_singular_values, dtype=np.float64)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def block_spectra(feats: list[torch.Tensor], samples: int = SPECTRUM_SAMPLES) -> list[np.ndarray]:
    """The spectrum of each block's pooled features over the first ``samples`` held-out images."""
    return [spectrum(f[:samples]) for f in feats]
