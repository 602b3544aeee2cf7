"""The paper's measurements of a trained encoder (Sec. 4.1, 4.2): linear evaluation, per-block
linear probes (Fig. 2), spectra and effective rank (Fig. 1b).

Everything works on frozen, average-pooled features of un-augmented images, computed once per
split and reused by every classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainables.augment import Normalize
from trainables.data import DataBundle
from trainables.features import pooled_features
from trainables.models import DecoupledResNet

LINEAR_EPOCHS = 200  # Sec. 4.1
LINEAR_LR = 1e-3
LINEAR_BATCH = 256
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


def linear_eval(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    epochs: int = LINEAR_EPOCHS,
    lr: float = LINEAR_LR,
    batch_size: int = LINEAR_BATCH,
    weight_decay: float = 1e-6,
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> LinearResult:
    """Train a linear classifier with Adam and cross-entropy on cached features (Sec. 4.1).

    Features are standardised with the train part's mean and std first (a fixed affine map, so
    still a linear classifier on the representation). Returns the final accuracies; nothing is
    selected on validation or test.
    """
    x_train, y_train = train
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)

    def prep(x):
        return (x - mean) / std

    g = torch.Generator(device="cpu").manual_seed(seed)
    device = x_train.device
    clf = torch.nn.Linear(x_train.shape[1], num_classes).to(device)
    torch.nn.init.zeros_(clf.weight)  # the problem is convex: start from uniform predictions
    torch.nn.init.zeros_(clf.bias)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    xt = prep(x_train)
    n = len(xt)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(clf(xt[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)

    @torch.no_grad()
    def accuracy(x, y):
        return float((clf(prep(x)).argmax(1) == y).float().mean()) if len(y) else float("nan")

    return LinearResult(accuracy(*train), accuracy(*val), accuracy(*test))


def probe_blocks(
    feats: BlockFeatures, data: DataBundle, epochs: int = LINEAR_EPOCHS, seed: int = 0
) -> list[LinearResult]:
    """A linear probe on every block's output h^k (Fig. 2); the last one is linear evaluation."""
    return [
        linear_eval(
            (tr, data.train_y), (va, data.val_y), (te, data.test_y),
            data.spec.num_classes, epochs=epochs, seed=seed,
        )
        for tr, va, te in zip(feats.train, feats.val, feats.test)
    ]


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
