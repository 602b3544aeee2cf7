"""Frozen features and the kNN monitor (the study's objective) against a naive reference."""

import math

import pytest
import torch

from trainables.config import TrainConfig
from trainables.features import knn_accuracy, pooled_features
from trainables.trainer import Trainer


def _naive_knn(bank, bank_labels, queries, query_labels, k, temperature, num_classes):
    """Weighted kNN one query at a time, straight from Wu et al. (2018): cosine similarity to
    every bank feature, the k most similar vote for their label with weight exp(s / t), the
    class with the most votes wins (the lowest class on a tie)."""
    correct = 0
    for q, label in zip(queries.tolist(), query_labels.tolist()):
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for b, b_label in zip(bank.tolist(), bank_labels.tolist()):
            bn = math.sqrt(sum(v * v for v in b))
            sims.append((sum(x * y for x, y in zip(q, b)) / (qn * bn), b_label))
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, b_label in sims[:k]:
            votes[b_label] += math.exp(s / temperature)
        best = max(range(num_classes), key=lambda c: (votes[c], -c))
        correct += best == label
    return correct / len(queries)


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.1), (20, 0.5), (500, 0.1)])
def test_knn_matches_the_naive_reference(k, temperature):
    g = torch.Generator().manual_seed(k)
    centres = torch.randn(4, 16, generator=g)
    bank_labels = torch.randint(0, 4, (120,), generator=g)
    bank = centres[bank_labels] + 1.2 * torch.randn(120, 16, generator=g)
    query_labels = torch.randint(0, 4, (50,), generator=g)
    queries = centres[query_labels] + 1.2 * torch.randn(50, 16, generator=g)
    ours = knn_accuracy(bank, bank_labels, queries, query_labels, k=k, temperature=temperature,
                        num_classes=4, chunk=7)  # chunks that do not divide the queries
    naive = _naive_knn(bank, bank_labels, queries, query_labels, k, temperature, 4)
    assert ours == pytest.approx(naive, abs=1e-12)
    assert 0.3 < ours < 1.0  # a problem where the answer is neither trivial nor hopeless


def test_a_tied_vote_goes_to_the_lower_class():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # as close to both
    bank_labels = torch.tensor([3, 1])
    acc = knn_accuracy(bank, bank_labels, queries, torch.tensor([1, 3]), k=2, num_classes=4)
    assert acc == 0.5  # both predicted 1: the first query is right, the second wrong
    assert _naive_knn(bank, bank_labels, queries, torch.tensor([1, 3]), 2, 0.1, 4) == 0.5


def test_the_monitor_is_knn_of_the_final_representation():
    cfg = TrainConfig(dataset="digits", K=2, threshold=0.0, epochs=1, batch_size=64,
                      subset=200, device="cpu", knn_k=15)
    trainer = Trainer(cfg)
    record = trainer.train_epoch()
    model, data = trainer.model.eval(), trainer.data
    with torch.no_grad():
        def final(x):  # the network's forward, pooled, outside pooled_features
            return model(trainer.normalize(x)).mean(dim=(2, 3))

        naive = _naive_knn(final(data.train_x), data.train_y, final(data.val_x), data.val_y,
                           15, cfg.knn_temperature, 10)
    assert record["knn_val_acc"] == pytest.approx(naive, abs=1e-12)
    assert record["knn_val_acc"] > 0.2


def test_pooled_features_are_float32_on_the_images_device():
    trainer = Trainer(TrainConfig(dataset="digits", K=4, epochs=1, subset=64, device="cpu"))
    feats = pooled_features(trainer.model, trainer.data.val_x[:10], trainer.normalize,
                            batch_size=3, all_blocks=True)
    assert [f.shape for f in feats] == [(10, c) for c in trainer.model.channels]
    assert all(f.dtype == torch.float32 for f in feats)
