"""The decoupled SimCLR loss, Eq. (1), and its subsampled form, Eq. (5).

A pure function of a batch of projections: rows ``i`` and ``i + N`` of ``z`` are the two views of
sample ``i``. With a threshold ``T`` every directed pair ``(i, l)`` gets
``alpha_il = 1[sim(z_i, z_l) >= T]`` (Eq. (4)), a constant that carries no gradient.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.specs import SUBSAMPLE_MODES  # noqa: F401 (its home is trainables.specs)


@dataclass
class ContrastiveLoss:
    """The loss and the fractions of pairs that entered it.

    ``kept`` stays on the device (``[kept_pos, kept_neg]``) so that a training loop can accumulate
    it without a host sync; ``kept_pos`` / ``kept_neg`` read it as Python floats.
    """

    loss: torch.Tensor
    kept: torch.Tensor

    @property
    def kept_pos(self) -> float:
        """Fraction of the 2N directed positive pairs that enter the loss."""
        return float(self.kept[0])

    @property
    def kept_neg(self) -> float:
        """Fraction of the 2N(2N-2) directed negative pairs that enter the denominators."""
        return float(self.kept[1])


def contrastive_loss(
    z: torch.Tensor,
    tau: float,
    threshold: float | None = None,
    subsample: str = "both",
) -> ContrastiveLoss:
    """SimCLR's NT-Xent over ``z`` ([2N, D]), Eq. (1), or subsampled with ``threshold``, Eq. (5).

    ``subsample`` picks what the threshold masks: ``"both"`` is Eq. (5); ``"pos"`` only the
    positive term, ``"neg"`` only the negatives of the denominator (the Fig. 4 ablation). The
    positive always stays in its own denominator, so every log is finite; an anchor whose positive
    is dropped contributes 0, and the loss is the mean over all 2N anchors.
    """
    if subsample not in SUBSAMPLE_MODES:
        raise ValueError(f"subsample={subsample!r} is not one of {', '.join(SUBSAMPLE_MODES)}")
    if z.dim() != 2 or z.shape[0] % 2 or z.shape[0] < 4:
        raise ValueError(f"z must be [2N, D] with N >= 2, got shape {tuple(z.shape)}")
    two_n = z.shape[0]
    pairs = _pairs(two_n, z.device)
    with torch.autocast(z.device.type, enabled=False):
        zn = F.normalize(z.float(), dim=1)
        sim = zn @ zn.T  # cosine similarity, [2N, 2N]
        logits = sim / tau
        pos_logit = logits[pairs.idx, pairs.pos_idx]

        # w[i, l]: the weight of exp(sim_il / tau) in anchor i's denominator.
        ones = torch.ones((), device=z.device)
        kept_pos, kept_neg, pos_weight = ones, ones, None
        w = pairs.others  # Eq. (1): every l != i
        if threshold is not None and threshold > -1:  # T <= -1 keeps every pair
            # Eq. (4) as float arithmetic (sign(0) + 1 = 1 keeps ties): faster than a bool mask.
            alpha = (sim.detach() - threshold).sign_().add_(1.0).clamp_(max=1.0)
            if subsample in ("both", "pos"):
                pos_weight = alpha[pairs.idx, pairs.pos_idx]
                kept_pos = pos_weight.mean()
            if subsample in ("both", "neg"):
                # A dropped negative weighs 0; the positive always stays in its denominator.
                # (In place: one fewer [2N, 2N] buffer per call.)
                w = alpha.mul_(pairs.negatives).add_(pairs.positives)
                kept_neg = (w.sum() - two_n) / pairs.n_neg

        # log sum_l w_il exp(logit_il - shift) + shift. Shifting by the positive logit (always
        # in the denominator) cannot overflow while 2 / tau < 80; below that, the largest kept.
        if 2.0 / tau < 80.0:
            shift = pos_logit.detach().unsqueeze(1)
        else:
            shift = (logits - (1.0 - w) * (4.0 / tau)).amax(dim=1, keepdim=True).detach()
        log_denom = ((logits - shift).exp() * w).sum(dim=1).log() + shift.squeeze(1)
        per_anchor = log_denom - pos_logit
        if pos_weight is not None:
            per_anchor = per_anchor * pos_weight  # Eq. (5): -alpha_ij log(...)
        loss = per_anchor.mean()
    return ContrastiveLoss(loss=loss, kept=torch.stack([kept_pos, kept_neg]).float().detach())


@dataclass(frozen=True)
class _Pairs:
    """The fixed structure of a batch of 2N projections: who is whose positive."""

    idx: torch.Tensor
    pos_idx: torch.Tensor
    others: torch.Tensor  # float, 1 off the diagonal
    positives: torch.Tensor  # float, 1 at (i, i +- N)
    negatives: torch.Tensor  # float, others - positives
    n_neg: int  # 2N(2N - 2) directed negative pairs


@functools.lru_cache(maxsize=16)
def _pairs(two_n: int, device: torch.device) -> _Pairs:
    idx = torch.arange(two_n, device=device)
    pos_idx = (idx + two_n // 2) % two_n
    others = 1.0 - torch.eye(two_n, device=device)
    positives = torch.zeros(two_n, two_n, device=device)
    positives[idx, pos_idx] = 1.0
    return _Pairs(idx, pos_idx, others, positives, others - positives, two_n * (two_n - 2))
