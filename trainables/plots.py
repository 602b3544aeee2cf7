"""The run's figures as PNG files: spectra (Fig. 1), probes (Fig. 2), kept ratios (Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path, **margins: float) -> Path:
    """Fixed margins (fractions of the figure), not ``tight_layout``: measuring every label's
    extent cost about as much as drawing the figure, which each trial pays at its end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.subplots_adjust(**{"left": 0.13, "right": 0.97, "bottom": 0.14, "top": 0.91, **margins})
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_spectra(
    spectra: list[np.ndarray], labels: list[str], path: str | Path, title: str = ""
) -> Path:
    """Normalised singular values, one line per block (or run), on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i, (s, label) in enumerate(zip(spectra, labels)):
        ax.plot(np.arange(1, len(s) + 1), np.maximum(s, 1e-30), label=label,
                color=cmap(i / max(1, len(spectra) - 1)))
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("normalised singular value")
    ax.set_title(title or "Spectrum of the representations")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_kept_ratios(history: list[dict], path: str | Path) -> Path:
    """kept_pos and kept_neg per block over epochs (Fig. 5)."""
    epochs = [r["epoch"] for r in history]
    K = len(history[0]["kept_pos"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, key, name in zip(axes, ("kept_pos", "kept_neg"), ("positive", "negative")):
        for k in range(K):
            ax.plot(epochs, [r[key][k] for r in history], color=cmap(k / max(1, K - 1)),
                    label=f"block {k + 1}")
        ax.set_title(f"{name} pairs kept")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("fraction kept")
    axes[1].legend(fontsize=7, ncol=2)
    return _save(fig, path, left=0.08, bottom=0.15, wspace=0.05)


def plot_probes(val_acc: list[float], test_acc: list[float], path: str | Path) -> Path:
    """Linear probe accuracy per block depth (Fig. 2)."""
    depth = np.arange(1, len(val_acc) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(depth, val_acc, "o-", label="validation")
    ax.plot(depth, test_acc, "s--", label="test")
    ax.set_xlabel("block k")
    ax.set_ylabel("linear probe accuracy")
    ax.set_xticks(depth)
    ax.legend()
    return _save(fig, path, left=0.15, top=0.96)
