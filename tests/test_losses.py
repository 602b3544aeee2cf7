"""Eq. (1) and Eq. (5) against a naive reference written pair by pair from the equations."""

import math

import pytest
import torch

from trainables.losses import contrastive_loss


def naive_loss(z, tau, threshold, subsample):
    """Eq. (5) term by term (Eq. (1) when ``threshold`` is None), float64, plain loops."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    two_n = z.shape[0]
    n = two_n // 2

    def sim(i, l):
        return (z[i] * z[l]).sum()

    def alpha(i, l):
        return 1.0 if threshold is None else float(sim(i, l).item() >= threshold)

    total, kept_pos, kept_neg, n_neg = 0.0, 0.0, 0.0, 0
    for i in range(two_n):
        j = (i + n) % two_n
        a_pos = alpha(i, j) if subsample in ("both", "pos") else 1.0
        denom = 0.0
        for l in range(two_n):
            if l == i:
                continue
            if l == j:
                w = 1.0  # the positive always stays in its own denominator
            else:
                w = alpha(i, l) if subsample in ("both", "neg") else 1.0
                kept_neg += w
                n_neg += 1
            denom = denom + w * torch.exp(sim(i, l) / tau)
        total = total - a_pos * torch.log(torch.exp(sim(i, j) / tau) / denom)
        kept_pos += a_pos
    return total / two_n, kept_pos / two_n, kept_neg / n_neg


CASES = [
    (n, d, tau, t, mode)
    for n, d in [(2, 3), (4, 8), (7, 16)]
    for tau in (0.01, 0.1, 0.5)
    for t in (None, -0.3, 0.0, 0.4)
    for mode in ("both", "pos", "neg")
    if not (t is None and mode != "both")
]


@pytest.mark.parametrize("n,d,tau,t,mode", CASES)
def test_matches_naive_reference(n, d, tau, t, mode):
    g = torch.Generator().manual_seed(n * 100 + d)
    z = torch.randn(2 * n, d, generator=g)
    # Pull positives together so that the threshold keeps some pairs and drops others.
    z[n:] = z[:n] + 0.7 * torch.randn(n, d, generator=g)

    z_fast = z.clone().requires_grad_(True)
    out = contrastive_loss(z_fast, tau, t, mode)
    out.loss.backward()

    z_ref = z.clone().double().requires_grad_(True)
    ref, ref_pos, ref_neg = naive_loss(z_ref, tau, t, mode)
    ref.backward()

    assert out.loss.dtype == torch.float32 and out.loss.dim() == 0
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert out.kept_pos == pytest.approx(ref_pos if mode != "neg" else 1.0)
    assert out.kept_neg == pytest.approx(ref_neg if mode != "pos" else 1.0)
    torch.testing.assert_close(z_fast.grad.double(), z_ref.grad, rtol=1e-4, atol=1e-6)


def test_identical_embeddings_give_log_2n_minus_1():
    z = torch.ones(10, 4)
    assert contrastive_loss(z, 0.5).loss.item() == pytest.approx(math.log(9), rel=1e-6)


def test_none_equals_threshold_minus_one():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    plain = contrastive_loss(z, 0.5)
    for mode in ("both", "pos", "neg"):
        masked = contrastive_loss(z, 0.5, -1.0, mode)
        assert masked.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
        assert masked.kept_pos == masked.kept_neg == 1.0


def test_threshold_one_keeps_nothing_and_stays_finite():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = contrastive_loss(z, 0.5, 1.0, "both")
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert out.kept_pos == 0.0 and out.kept_neg == 0.0
    assert torch.isfinite(z.grad).all() and (z.grad == 0).all()


@pytest.mark.parametrize("t", [-1.0, -0.5, 0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("mode", ["both", "pos", "neg"])
def test_finite_for_every_threshold(t, mode):
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    out = contrastive_loss(z, 0.1, t, mode)
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and torch.isfinite(z.grad).all()
    assert 0.0 <= out.kept_pos <= 1.0 and 0.0 <= out.kept_neg <= 1.0


def test_float32_under_autocast_from_bf16_input():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = contrastive_loss(z.bfloat16() * 30, 0.05, 0.0)
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())


def test_bad_mode_and_shape_are_refused():
    with pytest.raises(ValueError, match="subsample='x'"):
        contrastive_loss(torch.randn(8, 4), 0.5, 0.0, "x")
    with pytest.raises(ValueError, match=r"\[2N, D\]"):
        contrastive_loss(torch.randn(7, 4), 0.5)
