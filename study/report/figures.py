"""The report's figures, drawn from numbers already gathered (``data``), each embedded in the page
as a PNG ``<img>``: the page opens from disk, with no file beside it and no network.

Drawing only: what each figure shows is chosen and read in ``data``. The paper's figures of one
run (kept ratios, Fig. 5; spectra, Fig. 1b; probes, Fig. 2) are drawn by ``trainables.plots``,
the same functions that draw a run's own PNG files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import numpy as np

from study.report.gather import Front, Kept, ThresholdPoints
from study.report.importances import IMPORTANCE_EVALUATOR
from trainables.paper import PROTOCOL

STATE_MARKERS = {"finished": "o", "stopped early": "x", "diverged": "v", "failed": "v",
                 "running": ".", "lost": "."}


def _figure(draw: Callable, size=(6.4, 4.0)) -> str:
    """Draw into a new figure and return it as an embedded PNG ``<img>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size)
    draw(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def fig_accuracy_vs_threshold(points: ThresholdPoints, title: str) -> str:
    """Every trial's value against T, one colour per K; Eq. (1) drawn at the left edge."""
    def draw(fig):
        import matplotlib.pyplot as plt

        ax = fig.add_subplot()
        cmap = plt.get_cmap("viridis")
        for i, K in enumerate(points.Ks):
            color = cmap(i / max(1, len(points.Ks) - 1))
            for state, marker in STATE_MARKERS.items():
                pts = points.points.get((K, state))
                if pts:
                    x, y = zip(*pts)
                    ax.scatter(x, 100 * np.array(y), marker=marker, color=color,
                               label=f"K={K} {state}")
        if points.has_none:
            ax.axvline(points.left + 0.075, color="grey", lw=0.5)
            ax.set_xlabel("threshold T (left of the grey line: none, Eq. (1))")
        else:
            ax.set_xlabel("threshold T")
        ax.set_ylabel(f"{title} %")
        if points.paper_T is not None:
            ax.axvline(points.paper_T, color="red", ls="--", lw=1, label="paper's T")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"{title} against T")
    return _figure(draw)


def fig_tau(points: dict[str, list[tuple[float, float]]]) -> str:
    """The objective (kNN validation accuracy) against tau, one marker per fate."""
    def draw(fig):
        ax = fig.add_subplot()
        for state, marker in STATE_MARKERS.items():
            if points.get(state):
                x, y = zip(*points[state])
                ax.scatter(x, 100 * np.array(y), marker=marker, label=state)
        ax.set_xscale("log")
        ax.set_xlabel("temperature tau")
        ax.set_ylabel("kNN val % (objective)")
        ax.axvline(PROTOCOL.tau, color="red", ls="--", lw=1, label="paper's tau")
        ax.legend(fontsize=7)
        ax.set_title("Objective against tau")
    return _figure(draw)


def front_title(front: Front) -> str:
    cost = next((m for m, _ in front.objectives
                 if m not in ("knn_val_acc", "linear_val_acc")), "")
    return ("Accuracy against step time" if cost == "step_seconds"
            else "Accuracy against parallel cost")


def fig_front(front: Front) -> str:
    """Accuracy against parallel cost: every finished trial, the front joined, and the trials
    at the space's first point (the paper's configuration) starred."""
    accuracy = next(m for m, _ in front.objectives if m in ("knn_val_acc", "linear_val_acc"))
    cost = next((m for m, _ in front.objectives if m != accuracy), None)

    def xy(points: list) -> tuple[list[float], np.ndarray]:
        return ([p.values[cost] for p in points],
                100 * np.array([p.values[accuracy] for p in points]))

    def draw(fig):
        ax = fig.add_subplot()
        for head, marker in (("paper", "s"), ("mlp", "o")):
            pts = [p for p in front.points if p.params.get("head", "paper") == head]
            if pts:
                ax.scatter(*xy(pts), marker=marker, color="grey", alpha=0.6,
                           label=f"{head} heads")
        ax.plot(*xy(sorted(front.members, key=lambda p: p.values[cost])), "o-", color="C1",
                label="Pareto front")
        if front.marked:
            ax.scatter(*xy(front.marked), marker="*", s=200, color="red",
                       label="the paper's configuration", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(f"{cost} (lower is cheaper)")
        ax.set_ylabel(f"{accuracy} %")
        ax.legend(fontsize=8)
        ax.set_title(front_title(front))
    return _figure(draw)


def fig_history(values: list[tuple[int, float]], metric: str = "knn_val_acc",
                maximize: bool = True) -> str:
    """Each completed Optuna trial's objective, and the best so far."""
    def draw(fig):
        ax = fig.add_subplot()
        x, y = zip(*values)
        scale = 100 if metric.endswith("_acc") else 1
        best = np.maximum.accumulate(y) if maximize else np.minimum.accumulate(y)
        ax.scatter(x, scale * np.array(y), s=12, label="trial")
        ax.step(x, scale * best, where="post", color="C1", label="best so far")
        ax.set_xlabel("Optuna trial number")
        ax.set_ylabel(f"objective: {metric}" + (" %" if scale == 100 else ""))
        ax.legend(fontsize=8)
        ax.set_title("Optimisation history")
    return _figure(draw)


def fig_importances(importances: dict[str, float]) -> str:
    def draw(fig):
        ax = fig.add_subplot()
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance ({IMPORTANCE_EVALUATOR})")
        ax.set_title("Parameter importances for the objective")
    return _figure(draw, size=(6.4, 2.8))


def fig_kept(series: dict[str, Kept]) -> str:
    """series: run label -> ``{"kept_pos": {block: [(epoch, kept), ...]}, "kept_neg": ...}``
    (Fig. 5)."""
    from trainables.plots import draw_kept_ratios

    def draw(fig):
        axes = fig.subplots(1, 2, sharey=True)
        draw_kept_ratios(axes, series)
        axes[1].legend(fontsize=6, ncol=2)
    return _figure(draw, size=(9, 3.8))


def fig_spectra(spectra: dict[str, list[np.ndarray]]) -> str:
    """One panel per run: each block's normalised singular values (Fig. 1b)."""
    from trainables.plots import draw_spectra

    def draw(fig):
        axes = fig.subplots(1, len(spectra), sharey=True, squeeze=False)[0]
        for ax, (label, blocks) in zip(axes, spectra.items()):
            draw_spectra(ax, blocks, [f"block {k + 1}" for k in range(len(blocks))], floor=1e-12)
            ax.set_title(label, fontsize=9)
        axes[0].set_ylabel("normalised singular value")
        axes[-1].legend(fontsize=6, ncol=2)
    return _figure(draw, size=(4.5 * len(spectra), 3.8))


def fig_probes(probes: dict[str, list[float]]) -> str:
    """Linear probe test accuracy per block, one line per run (Fig. 2)."""
    from trainables.plots import draw_probes

    def draw(fig):
        ax = fig.add_subplot()
        draw_probes(ax, probes)
        ax.set_ylabel("linear probe test %")
        ax.legend(fontsize=8)
        ax.set_title("Probe accuracy per block")
    return _figure(draw)


def fig_cells(cells: dict[int, dict[str, dict[int, float]]], metric: str) -> str:
    """The 2 x 2 of a comparison: for each split, its cells' values seed by seed (one grey line
    a seed, joining its cells: the differences are paired) and each cell's mean (a bar)."""
    def draw(fig):
        for i, (K, by_cell) in enumerate(sorted(cells.items())):
            ax = fig.add_subplot(1, len(cells), i + 1)
            labels = list(by_cell)
            seeds = sorted({s for values in by_cell.values() for s in values})
            for seed in seeds:
                xs = [x for x, c in enumerate(labels) if seed in by_cell[c]]
                ax.plot(xs, [100 * by_cell[labels[x]][seed] for x in xs], color="grey",
                        lw=0.7, marker="o", ms=3)
            for x, c in enumerate(labels):
                if by_cell[c]:
                    ax.hlines(100 * np.mean(list(by_cell[c].values())), x - 0.3, x + 0.3,
                              color="red", lw=2)
            ax.set_xticks(range(len(labels)), [c.replace(" ", "\n") for c in labels],
                          fontsize=7)
            ax.set_title(f"K={K} ({len(seeds)} seed(s))", fontsize=9)
            ax.set_ylabel(f"{metric} %")
    return _figure(draw, size=(3.2 * max(1, len(cells)), 3.6))
