"""The toy linear model of Sec. 3.2 (Fig. 1a), after Jing et al. (2022).

Data: standard normal vectors of dimension 16; two views add sigma times standard normal noise to
the last 8 dimensions only. A linear map W gives normalised representations z = Wx / |Wx|,
trained by gradient descent on Eq. (5) (Eq. (1) without a threshold) with fresh samples every
step. Reported: the singular values of the covariance of z on held-out data, normalised by the
largest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from trainables.evaluation import spectrum
from trainables.losses import contrastive_loss

DIM, AUGMENTED = 16, 8
COLLAPSE_CUTOFF = 0.1  # a normalised singular value below this counts as a collapsed dimension


@dataclass
class ToyConfig:
    sigma: float = 1.5
    tau: float = 0.5
    lr: float = 0.05
    batch: int = 256
    steps: int = 1000
    seed: int = 0
    eval_samples: int = 4096


@dataclass
class ToyRun:
    threshold: float | None
    singular_values: list[float]
    collapsed: int  # normalised singular values below COLLAPSE_CUTOFF
    augmented_log10: float  # mean log10 of the 8 smallest: the tail on Fig. 1a's log scale
    kept_pos: float
    kept_neg: float

    def to_dict(self) -> dict:
        return asdict(self)


def views(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """The two views of ``x`` stacked as [2N, D]: noise on the last 8 dimensions only."""
    noise = torch.zeros(2, *x.shape)
    noise[..., DIM - AUGMENTED:] = sigma * torch.randn(2, len(x), AUGMENTED, generator=g)
    return torch.cat([x + noise[0], x + noise[1]])


def train_toy(threshold: float | None, cfg: ToyConfig) -> ToyRun:
    """Gradient descent on W from the same seeded start for every threshold."""
    g = torch.Generator().manual_seed(cfg.seed)
    W = (torch.randn(DIM, DIM, generator=g) / DIM**0.5).requires_grad_(True)
    opt = torch.optim.SGD([W], lr=cfg.lr)
    out = None
    for _ in range(cfg.steps):
        x = torch.randn(cfg.batch, DIM, generator=g)
        out = contrastive_loss(views(x, cfg.sigma, g) @ W.T, cfg.tau, threshold, "both")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        x = torch.randn(cfg.eval_samples, DIM, generator=g)
        z = torch.nn.functional.normalize(x @ W.T, dim=1)
    s = spectrum(z)
    tail = np.sort(s)[:AUGMENTED]
    return ToyRun(
        threshold=threshold,
        singular_values=[float(v) for v in s],
        collapsed=int((s < COLLAPSE_CUTOFF).sum()),
        augmented_log10=float(np.log10(np.maximum(tail, 1e-30)).mean()),
        kept_pos=out.kept_pos if out is not None else 1.0,
        kept_neg=out.kept_neg if out is not None else 1.0,
    )
