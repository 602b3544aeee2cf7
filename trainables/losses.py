"""The decoupled SimCLR loss, Eq. (1), and its subsampled form, Eq. (5).

A pure function of a batch of projections: rows ``i`` and ``i + N`` of ``z`` are the two views of
sample ``i``. With a threshold ``T`` every directed pair ``(i, l)`` gets
``alpha_il = 1[sim(z_i, z_l) >= T]`` (Eq. (4)), a constant that carries no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUBSAMPLE_MODES = ("both", "pos", "neg")


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
    n = two_n // 2
    device = z.device
    with torch.autocast(device.type, enabled=False):
        zn = F.normalize(z.float(), dim=1)
        sim = zn @ zn.T  # cosine similarity, [2N, 2N]
        logits = sim / tau
        idx = torch.arange(two_n, device=device)
        pos_idx = (idx + n) % two_n
        pos_logit = logits[idx, pos_idx]

        eye = torch.eye(two_n, dtype=torch.bool, device=device)
        pos_mask = torch.zeros_like(eye)
        pos_mask[idx, pos_idx] = True
        neg_mask = ~(eye | pos_mask)

        ones = torch.ones((), device=device)
        kept_pos, kept_neg = ones, ones
        pos_weight = None
        denom_mask = ~eye  # Eq. (1): every l != i
        if threshold is not None:
            alpha = sim.detach().clamp(-1.0, 1.0) >= threshold  # Eq. (4), no gradient
            if subsample in ("both", "neg"):
                denom_mask = pos_mask | (neg_mask & alpha)
                kept_neg = (neg_mask & alpha).sum() / neg_mask.sum()
            if subsample in ("both", "pos"):
                pos_weight = alpha[idx, pos_idx].float()
                kept_pos = pos_weight.mean()

        log_denom = torch.logsumexp(logits.masked_fill(~denom_mask, float("-inf")), dim=1)
        per_anchor = log_denom - pos_logit
        if pos_weight is not None:
            per_anchor = per_anchor * pos_weight  # Eq. (5): -alpha_ij log(...)
        loss = per_anchor.mean()
    return ContrastiveLoss(loss=loss, kept=torch.stack([kept_pos, kept_neg]).float().detach())
