"""The run's figures as PNG files: spectra (Fig. 1), probes (Fig. 2), kept ratios (Fig. 5).

Each figure is drawn by one ``draw_*`` function onto axes it is given, so that a run's PNG files
here and the study's report (``study.report.figures``, which puts them in its page) draw the same
paper figure the same way; ``plot_*`` frame and save a run's own.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

KEPT = (("kept_pos", "positive"), ("kept_neg", "negative"))
RUN_STYLES = ("-", "--", ":", "-.")  # one per run drawn on the same axes
PROBE_STYLES = ("o-", "s--", "^:", "v-.")


def _save(fig, path: str | Path, **margins: float) -> Path:
    """Fixed margins (fractions of the figure), not ``tight_layout``: measuring every label's
    extent cost about as much as drawing the figure, which each trial pays at its end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.subplots_adjust(**{"left": 0.13, "right": 0.97, "bottom": 0.14, "top": 0.91, **margins})
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_spectra(ax, spectra: list[np.ndarray], labels: list[str], floor: float = 1e-30) -> None:
    """Normalised singular values, one line per block (or run), on a log scale; a value below
    ``floor`` is drawn at it (a log scale has no zero)."""
    cmap = plt.get_cmap("viridis")
    for i, (s, label) in enumerate(zip(spectra, labels)):
        ax.plot(np.arange(1, len(s) + 1), np.maximum(s, floor), label=label,
                color=cmap(i / max(1, len(spectra) - 1)))
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")


def draw_kept_ratios(axes, runs: dict[str, dict[str, dict[int, list[tuple[int, float]]]]]) -> None:
    """kept_pos and kept_neg per block over epochs (Fig. 5), on two axes side by side.

    ``runs``: a run's label ("" for a run alone) -> ``{"kept_pos": {block: [(epoch, fraction),
    ...]}, "kept_neg": {...}}``; blocks by colour, runs by line style. Epochs are whole numbers,
    and so are the ticks of the epoch axis.
    """
    cmap = plt.get_cmap("viridis")
    for (label, kinds), ls in zip(runs.items(), RUN_STYLES):
        for ax, (kind, _) in zip(axes, KEPT):
            blocks = kinds[kind]
            for k, points in blocks.items():
                if not points:
                    continue
                x, y = zip(*points)
                ax.plot(x, y, ls, marker="o", markersize=3,
                        color=cmap((k - 1) / max(1, len(blocks) - 1)),
                        label=f"{label} block {k}".strip())
    for ax, (_, name) in zip(axes, KEPT):
        ax.set_title(f"{name} pairs kept")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("fraction kept")


def draw_probes(ax, curves: dict[str, list[float]]) -> None:
    """Linear probe accuracy in % per block depth (Fig. 2), one line per curve (a split, or a
    run); ``curves``: label -> accuracy (a fraction) of blocks 1, 2, ..."""
    for (label, acc), style in zip(curves.items(), cycle(PROBE_STYLES)):
        ax.plot(range(1, len(acc) + 1), 100 * np.asarray(acc), style, label=label)
    ax.set_xlabel("block k")
    ax.set_xticks(range(1, max(len(a) for a in curves.values()) + 1))


def plot_spectra(
    spectra: list[np.ndarray], labels: list[str], path: str | Path, title: str = ""
) -> Path:
    """Normalised singular values, one line per block (or run), on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_spectra(ax, spectra, labels)
    ax.set_ylabel("normalised singular value")
    ax.set_title(title or "Spectrum of the representations")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_kept_ratios(history: list[dict], path: str | Path) -> Path:
    """kept_pos and kept_neg per block over epochs (Fig. 5)."""
    K = len(history[0]["kept_pos"])
    run = {kind: {k + 1: [(r["epoch"], r[kind][k]) for r in history] for k in range(K)}
           for kind, _ in KEPT}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    draw_kept_ratios(axes, {"": run})
    axes[1].legend(fontsize=7, ncol=2)
    return _save(fig, path, left=0.08, bottom=0.15, wspace=0.05)


def plot_probes(val_acc: list[float], test_acc: list[float], path: str | Path) -> Path:
    """Linear probe accuracy per block depth (Fig. 2)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    draw_probes(ax, {"validation": val_acc, "test": test_acc})
    ax.set_ylabel("linear probe accuracy %")
    ax.legend()
    return _save(fig, path, left=0.15, top=0.96)
