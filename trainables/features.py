"""Frozen features of un-augmented images: the average-pooled h^k of every block, or the last."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.augment import Normalize
from trainables.models import DecoupledResNet


@torch.no_grad()
def pooled_features(
    model: DecoupledResNet,
    images: torch.Tensor,
    normalize: Normalize,
    batch_size: int = 1024,
    all_blocks: bool = False,
    bf16: bool = False,
) -> list[torch.Tensor]:
    """Global-average-pooled block outputs in eval mode, float32 on the images' device.

    Returns ``[h^K]``, or ``[h^1, ..., h^K]`` with ``all_blocks``. ``bf16``: run the network
    under bf16 autocast (``Trainer.bf16`` says when).
    """
    was_training = model.training
    model.eval()
    parts: list[list[torch.Tensor]] = []
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size])
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
                if all_blocks:
                    hs = model.block_outputs(x, pool=True)
                else:
                    hs = [model(x).mean(dim=(2, 3))]
            parts.append([h.float() for h in hs])
    finally:
        model.train(was_training)
    return [torch.cat(per_block) for per_block in zip(*parts)]


@torch.no_grad()
def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """Weighted kNN accuracy on cosine similarity (Wu et al., 2018): each of the k nearest bank
    features votes for its label with weight exp(sim / temperature)."""
    num_classes = num_classes or int(bank_labels.max()) + 1
    bank = F.normalize(bank, dim=1)
    queries = F.normalize(queries, dim=1)
    k = min(k, len(bank))
    correct = torch.zeros((), device=queries.device)
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        correct += (votes.argmax(1) == query_labels[start:start + chunk]).sum()
    return float(correct) / len(queries)
