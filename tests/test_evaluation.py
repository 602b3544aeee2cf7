"""Linear evaluation, probes, spectra and effective rank, and the toy linear model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainables.augment import Normalize
from trainables.config import TrainConfig
from trainables.evaluation import effective_rank, linear_eval, linear_probes, spectrum
from trainables.features import pooled_features
from trainables.models import DecoupledResNet
from trainables.results import final_report
from trainables.toy_model import AUGMENTED, ToyConfig, train_toy
from trainables.trainer import Trainer


def _blobs(n, d=20, classes=4, seed=0, shuffle_labels=False):
    """Gaussian blobs around centres shared by every split; ``seed`` draws the points."""
    centers = 6 * torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = centers[y] + torch.randn(n, d, generator=g)
    if shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    return x, y


def test_linear_eval_separates_separable_features():
    res = linear_eval(_blobs(400), _blobs(100, seed=1), _blobs(100, seed=2), 4, epochs=30)
    assert res.train_acc > 0.98 and res.val_acc > 0.98 and res.test_acc > 0.98


def _naive_linear_eval(x_train, y_train, x_test, y_test, classes, epochs, seed):
    """One probe alone, straight from the protocol: standardise with the train part's
    statistics, a zero-initialised nn.Linear, Adam, minibatches of 256 in a seeded order."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    clf = torch.nn.Linear(x_train.shape[1], classes)
    torch.nn.init.zeros_(clf.weight)
    torch.nn.init.zeros_(clf.bias)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3, weight_decay=1e-6)
    g = torch.Generator().manual_seed(seed)
    xt = (x_train - mean) / std
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for start in range(0, len(xt), 256):
            idx = perm[start:start + 256]
            loss = torch.nn.functional.cross_entropy(clf(xt[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return [float((clf((x - mean) / std).argmax(1) == y).float().mean())
                for x, y in ((x_train, y_train), (x_test, y_test))]


def test_probes_trained_together_end_as_if_trained_alone():
    """Widths 6, 6, 9: two probes share a batched matmul, one is alone; noisy, overlapping
    classes so that the accuracies are far from 0 and 1 and any difference would show."""
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 5, (700,), generator=g)
    feats = [torch.randn(700, d, generator=g) + 0.4 * torch.nn.functional.one_hot(y, 5)
             .float().repeat(1, 2)[:, :d] * (k + 1) for k, d in enumerate((6, 6, 9))]
    train = [f[:600] for f in feats]
    test = [f[600:] for f in feats]
    together = linear_probes(train, y[:600], test, y[600:], test, y[600:], 5, epochs=4,
                             seed=3)
    for k in range(3):
        alone = _naive_linear_eval(train[k], y[:600], test[k], y[600:], 5, epochs=4, seed=3)
        assert [together[k].train_acc, together[k].test_acc] == pytest.approx(alone, abs=1e-9)
    accs = [r.train_acc for r in together]
    assert len(set(accs)) == 3 and all(0.3 < a < 0.95 for a in accs)


def test_pooling_inside_the_loop_gives_the_pooled_block_outputs():
    torch.manual_seed(0)
    model = DecoupledResNet("resnet18", 4, 1, "small", 0.125).eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        full = model.block_outputs(x)
        pooled = model.block_outputs(x, pool=True)
        feats = pooled_features(model, x, Normalize((0.0,), (1.0,)), all_blocks=True)
    for h, p, f in zip(full, pooled, feats):
        torch.testing.assert_close(p, h.mean(dim=(2, 3)))
        torch.testing.assert_close(f, h.mean(dim=(2, 3)))


def test_linear_eval_is_at_chance_on_shuffled_labels():
    res = linear_eval(
        _blobs(400, shuffle_labels=True), _blobs(400, seed=1, shuffle_labels=True),
        _blobs(400, seed=2, shuffle_labels=True), 4, epochs=30,
    )
    assert abs(res.test_acc - 0.25) < 0.1


def test_spectrum_recovers_a_known_covariance():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([4.0, 2.0, 1.0, 0.5])
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    x = torch.randn(200_000, 4, generator=g) * scales @ q.T  # covariance eigenvalues scales**2
    expected = (scales**2 / scales[0] ** 2).numpy()
    np.testing.assert_allclose(spectrum(x), expected, rtol=0.03)


def test_effective_rank_of_isotropic_and_rank_one():
    assert effective_rank(np.ones(32)) == pytest.approx(32)
    assert effective_rank(np.array([1.0] + [1e-9] * 31)) == pytest.approx(1.0, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(100_000, 8, generator=g)
    assert effective_rank(spectrum(iso)) == pytest.approx(8, rel=0.01)


def test_report_has_one_value_per_block_and_writes_files(tmp_path):
    cfg = TrainConfig(dataset="digits", K=4, threshold=0.0, epochs=1, subset=256, batch_size=64)
    trainer = Trainer(cfg)
    trainer.fit()
    metrics, spectra = final_report(trainer, linear_epochs=5, out_dir=tmp_path)
    for key in ("probe_val_acc", "probe_test_acc", "effective_rank"):
        assert len(metrics[key]) == 4
    # Linear evaluation is the probe of h^K: the same as a classifier trained alone on the
    # network's own pooled output.
    final = [pooled_features(trainer.model, x, trainer.normalize)[0]
             for x in (trainer.data.train_x, trainer.data.val_x, trainer.data.test_x)]
    data = trainer.data
    alone = linear_eval((final[0], data.train_y), (final[1], data.val_y),
                        (final[2], data.test_y), 10, epochs=5, seed=cfg.seed)
    assert (metrics["linear_train_acc"], metrics["linear_val_acc"], metrics["linear_test_acc"]) \
        == pytest.approx((alone.train_acc, alone.val_acc, alone.test_acc), abs=1e-9)
    # Measured on CUDA only, never estimated.
    assert (metrics["peak_memory_bytes"] is None) == (trainer.device.type != "cuda")
    assert [len(s) for s in spectra] == trainer.model.channels
    assert sorted(p.name for p in (tmp_path / "spectra").iterdir()) == [
        "block_1.npy", "block_2.npy", "block_3.npy", "block_4.npy", "spectra.png"
    ]
    assert (tmp_path / "kept_ratios.png").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["max_block_macs"] > 0


def test_toy_without_threshold_collapses_the_augmented_dimensions():
    run = train_toy(None, ToyConfig(steps=300))
    s = np.array(run.singular_values)
    assert run.collapsed == AUGMENTED
    assert s[:AUGMENTED].min() > 0.3  # the clean dimensions survive
    assert s[AUGMENTED:].max() < 1e-3


def test_toy_threshold_lifts_the_augmented_tail():
    cfg = ToyConfig(steps=300)
    assert train_toy(0.6, cfg).augmented_log10 > train_toy(None, cfg).augmented_log10 + 2


def test_toy_command_json_shape(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "study.toy", "--thresholds", "none,0.5", "--steps", "50",
         "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["sigma"] == 1.5
    assert [r["threshold"] for r in out["runs"]] == [None, 0.5]
    for r in out["runs"]:
        assert len(r["singular_values"]) == 16 and 0 <= r["collapsed"] <= 16
        assert 0 <= r["kept_pos"] <= 1 and 0 <= r["kept_neg"] <= 1
    assert (tmp_path / "toy_spectra.png").exists()
