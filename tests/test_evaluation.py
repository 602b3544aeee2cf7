"""Linear evaluation, probes, spectra and effective rank, and the toy linear model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainables.config import TrainConfig
from trainables.evaluation import effective_rank, linear_eval, spectrum
from trainables.report import final_report
from trainables.toy import AUGMENTED, ToyConfig, train_toy
from trainables.train import Trainer


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
    assert metrics["linear_val_acc"] == metrics["probe_val_acc"][-1]
    assert metrics["peak_memory_bytes"] is None  # a CPU: not measured, never estimated
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
