"""``python -m study.report``: a study's answer as one self-contained HTML file, from the store.

Reads MLflow (and Optuna for a search) and never re-trains. Writes ``report.html`` (figures
embedded, no network: it opens from disk), prints its tables, and logs the file into the study's
parent run (``report/report.html``), where the MLflow UI's artifact viewer shows it.

- A grid (``study.tune --grid``) or re-run (``--config``): one row per cell with mean +- std over
  its seeds beside the paper's figure where the paper reports one, and the gain of T over Eq. (1)
  per K, paired by seed.
- A search: the best T per K beside the paper's T, the objective against T per K and against
  tau, the optimisation history and Optuna's parameter importances.
- Both: the best trial against the T = none trial of the same K: kept ratios per block over
  epochs (Fig. 5), spectra per block (Fig. 1b), probe accuracy per block (Fig. 2).

Accuracies are shown in %, like the paper. Hyperparameters are ranked on the validation split
only; test accuracy is reported beside them, never used to choose.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study._cli import log, parser, run
from study.paper import PAPER_T, PaperCell, paper_cell
from study.records import TrialRecord as Trial
from study.records import ranked, read_trials
from study.store import Store
from trainables.errors import ConfigError

REPORT_FILE = "report.html"
MIN_IMPORTANCE_TRIALS = 4
ARTIFACT_DIR = "report"


@dataclass
class StudyRecord:
    name: str
    dataset: str
    kind: str  # grid, rerun or search
    grid: str
    parent_run_id: str
    experiment_id: str
    trials: list[Trial]
    plan: dict = field(default_factory=dict)

    @property
    def finished(self) -> list[Trial]:
        return ranked([t for t in self.trials if t.finished])


def load_study(store: Store, study: str) -> StudyRecord:
    """The study's plan and every trial run of it; one line when there is nothing to report."""
    plan = store.load_study(study)  # names the known studies when ``study`` is not one
    trials = read_trials(store, plan["dataset"], study)
    kind = "grid" if plan.get("grid") else "rerun" if plan.get("config_file") else "search"
    record = StudyRecord(study, plan["dataset"], kind, plan.get("grid", ""),
                         plan["parent_run_id"], plan["experiment_id"],
                         sorted(trials, key=lambda t: t.trial_id), plan)
    if not record.finished:
        states = Counter(t.state for t in trials)
        raise ConfigError(
            f"study {study!r} has no finished trial to report yet "
            f"({', '.join(f'{n} {s}' for s, n in states.items()) or 'no trial started'}); "
            f"run the report again once one has finished"
        )
    return record


# ----------------------------------------------------------------------------------------------
# Tables


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std; None with one value
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass
class Column:
    key: str  # a metric name, or a Trial property through ``get``
    title: str
    fmt: Callable[[float], str]
    get: Callable[[Trial], float | None] | None = None

    def value(self, t: Trial) -> float | None:
        return self.get(t) if self.get else t.metrics.get(self.key)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _pct_std(v: float) -> str:
    return f"{100 * v:.2f}"


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g}"


def _gb(v: float) -> str:
    return f"{v / 1e9:.2f} GB"


GRID_COLUMNS = [
    Column("linear_test_acc", "linear test %", _pct),
    Column("linear_val_acc", "linear val %", _pct),
    Column("knn_val_acc", "kNN val %", _pct),
    Column("last_block_rank", "eff. rank (last block)", lambda v: f"{v:.1f}",
           get=lambda t: t.last_block_rank),
    Column("max_block_macs", "max block MACs", _si),
    Column("max_block_head_macs", "max block+head MACs", _si),
    Column("peak_memory_bytes", "peak memory", _gb),
]


def _stat_text(stat: Stat | None, col: Column) -> str:
    if stat is None:
        return "-"
    if stat.std is None:
        return col.fmt(stat.mean)
    if col.fmt in (_pct,):
        return f"{_pct(stat.mean)} ± {_pct_std(stat.std)}"
    if stat.std == 0:  # MACs are the same for every seed
        return col.fmt(stat.mean)
    return f"{col.fmt(stat.mean)} ± {col.fmt(stat.std)}"


def _paper_text(p: PaperCell | None, what: str) -> str:
    if p is None:
        return "-"
    if what == "accuracy":
        return f"{p.accuracy:.1f}" + (f" ± {p.std:.1f}" if p.std is not None else "")
    if what == "macs":
        return _si(p.max_block_macs) if p.max_block_macs else "-"
    return f"{p.memory_gb:.1f} GB" if p.memory_gb else "-"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        out = [self.title, line(self.headers), *(line(r) for r in self.rows)]
        return "\n".join(out + ([self.note] if self.note else []))

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{note}")


def _cells(record: StudyRecord) -> dict[str, list[Trial]]:
    """Finished trials by cell, in the order the trials were made."""
    cells: dict[str, list[Trial]] = {}
    for t in record.trials:
        cells.setdefault(t.cell, [])
        if t.finished:
            cells[t.cell].append(t)
    return cells


def grid_table(record: StudyRecord) -> Table:
    """One row per cell: mean +- std over its finished seeds, the paper's figure beside."""
    columns = [c for c in GRID_COLUMNS
               if any(c.value(t) is not None for t in record.finished)]
    headers = ["cell", "seeds", *(c.title for c in columns),
               "paper test %", "paper max block MACs", "paper memory"]
    rows = []
    all_seeds = Counter(t.cell for t in record.trials)
    for cell, trials in _cells(record).items():
        first = next(t for t in record.trials if t.cell == cell)
        p = first.params
        paper = paper_cell(record.dataset, first.K, first.threshold, p.get("subsample", "both"),
                           p.get("tau", 0.5))
        stats = [_stat_text(Stat.of([c.value(t) for t in trials]), c) for c in columns]
        rows.append([cell, f"{len(trials)}/{all_seeds[cell]}", *stats,
                     _paper_text(paper, "accuracy"), _paper_text(paper, "macs"),
                     _paper_text(paper, "memory")])
    return Table(
        f"Cells of {record.grid or 'the re-run'}: mean ± std over seeds (finished/all)",
        headers, rows,
        "The paper's figures (Table 1: CIFAR-10, STL-10; Table 2: Fashion-MNIST) stand beside "
        "the cells they report: Eq. (1), or Eq. (5) at the paper's T with both pair kinds, "
        "tau 0.5, at the paper's full budget. Max block MACs count the block alone, as Table 1.",
    )


def gain_table(record: StudyRecord) -> Table | None:
    """Per K and T: test accuracy of Eq. (5) minus that of Eq. (1), paired by seed."""
    by: dict[tuple, dict[int, float]] = {}
    for t in record.finished:
        p = t.params
        key = (t.K, t.threshold, p.get("subsample", "both"), p.get("tau"))
        by.setdefault(key, {})[p.get("seed", 0)] = t.metrics["linear_test_acc"]
    rows = []
    for (K, T, sub, tau), accs in sorted(by.items(), key=lambda kv: _order(kv[0])):
        none = by.get((K, None, "both", tau)) or by.get((K, None, sub, tau))
        if T is None or not none:
            continue
        seeds = sorted(set(accs) & set(none))
        gains = [accs[s] - none[s] for s in seeds]
        stat = Stat.of(gains)
        if stat is None:
            continue
        paper = _paper_gain(record.dataset, K, T, sub, tau)
        rows.append([str(K), f"{T:g}", sub, f"{tau:g}", str(stat.n),
                     f"{100 * stat.mean:+.2f}" + (f" ± {100 * stat.std:.2f}"
                                                   if stat.std is not None else ""),
                     paper])
    if not rows:
        return None
    return Table("Gain of T over Eq. (1) in linear test accuracy (points of %), paired by seed",
                 ["K", "T", "subsample", "tau", "seeds", "gain", "paper"], rows,
                 "Each seed's Eq. (5) trial minus the Eq. (1) trial of the same K, tau and seed.")


def _order(key: tuple) -> tuple:
    K, T, sub, tau = key
    return (K, -2 if T is None else T, sub, tau or 0)


def _paper_gain(dataset: str, K: int, T: float, sub: str, tau: float) -> str:
    ours, simclr = paper_cell(dataset, K, T, sub, tau), paper_cell(dataset, K, None)
    return f"{ours.accuracy - simclr.accuracy:+.1f}" if ours and simclr else "-"


def best_per_K_table(record: StudyRecord) -> Table:
    rows = []
    seen = set()
    for t in record.finished:  # best first
        if t.K in seen:
            continue
        seen.add(t.K)
        m = t.metrics
        rows.append([str(t.K), _t_text(t.threshold),
                     f"{t.params.get('threshold_slope', 0.0):.3g}",
                     f"{t.params.get('tau', 0.5):.3g}", t.params.get("head", "paper"),
                     t.params.get("subsample", "both"), _pct(m["linear_val_acc"]),
                     _pct(m.get("knn_val_acc", math.nan)), _pct(m["linear_test_acc"]),
                     _t_text(PAPER_T.get(record.dataset, "-")), t.trial_id])
    rows.sort(key=lambda r: int(r[0]))
    return Table("Best T per K (chosen on validation accuracy)",
                 ["K", "T", "T slope", "tau", "head", "subsample", "linear val %", "kNN val %",
                  "linear test %", "paper T", "trial"], rows)


def _t_text(T) -> str:
    return "none" if T is None else T if isinstance(T, str) else f"{T:.3g}"


def trials_table(record: StudyRecord) -> Table:
    rows = [[t.trial_id, str(t.K), _t_text(t.threshold), f"{t.params.get('tau', 0.5):.3g}",
             t.params.get("subsample", "both"), str(t.params.get("seed", 0)),
             _pct(t.metrics["knn_val_acc"]) if "knn_val_acc" in t.metrics else "-",
             _pct(t.metrics["linear_val_acc"]) if "linear_val_acc" in t.metrics else "-",
             str(t.epochs or "-"), t.state]
            for t in ranked(record.trials)]
    states = Counter(t.state for t in record.trials)
    return Table("Every trial, best first by validation accuracy",
                 ["trial", "K", "T", "tau", "subsample", "seed", "kNN val %", "linear val %",
                  "epochs", "state"], rows,
                 ", ".join(f"{n} {s}" for s, n in states.items()))


# ----------------------------------------------------------------------------------------------
# Figures


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


STATE_MARKERS = {"finished": "o", "stopped early": "x", "diverged": "v", "failed": "v",
                 "running": ".", "lost": "."}


def fig_accuracy_vs_threshold(record: StudyRecord, metric: str, title: str) -> str:
    """Every trial's ``metric`` against T, one colour per K; Eq. (1) drawn at the left edge."""
    def draw(fig):
        import matplotlib.pyplot as plt

        ax = fig.add_subplot()
        Ks = sorted({t.K for t in record.trials})
        cmap = plt.get_cmap("viridis")
        left = min([t.threshold for t in record.trials if t.threshold is not None] or [0]) - 0.15
        for i, K in enumerate(Ks):
            color = cmap(i / max(1, len(Ks) - 1))
            for state, marker in STATE_MARKERS.items():
                pts = [(left if t.threshold is None else t.threshold, t.metrics.get(metric))
                       for t in record.trials
                       if t.K == K and t.state == state and t.metrics.get(metric) is not None]
                if pts:
                    x, y = zip(*pts)
                    ax.scatter(x, 100 * np.array(y), marker=marker, color=color,
                               label=f"K={K} {state}")
        if any(t.threshold is None for t in record.trials):
            ax.axvline(left + 0.075, color="grey", lw=0.5)
            ax.set_xlabel("threshold T (left of the grey line: none, Eq. (1))")
        else:
            ax.set_xlabel("threshold T")
        ax.set_ylabel(f"{title} %")
        if record.dataset in PAPER_T:
            ax.axvline(PAPER_T[record.dataset], color="red", ls="--", lw=1, label="paper's T")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"{title} against T")
    return _figure(draw)


def fig_tau(record: StudyRecord) -> str:
    def draw(fig):
        ax = fig.add_subplot()
        for state, marker in STATE_MARKERS.items():
            pts = [(t.params.get("tau", 0.5), t.metrics["knn_val_acc"]) for t in record.trials
                   if t.state == state and "knn_val_acc" in t.metrics]
            if pts:
                x, y = zip(*pts)
                ax.scatter(x, 100 * np.array(y), marker=marker, label=state)
        ax.set_xscale("log")
        ax.set_xlabel("temperature tau")
        ax.set_ylabel("kNN val % (objective)")
        ax.axvline(0.5, color="red", ls="--", lw=1, label="paper's tau")
        ax.legend(fontsize=7)
        ax.set_title("Objective against tau")
    return _figure(draw)


def fig_front(points: list, members: list, objectives: list, marked: list) -> str:
    """Accuracy against parallel cost: every finished trial, the front joined, and the trials
    at the space's first point (the paper's configuration) starred."""
    accuracy = next(m for m, _ in objectives if m in ("knn_val_acc", "linear_val_acc"))
    cost = next((m for m, _ in objectives if m != accuracy), None)

    def draw(fig):
        ax = fig.add_subplot()
        for head, marker in (("paper", "s"), ("mlp", "o")):
            pts = [p for p in points if p.params.get("head", "paper") == head]
            if pts:
                ax.scatter([p.values[cost] for p in pts],
                           [100 * p.values[accuracy] for p in pts], marker=marker,
                           color="grey", alpha=0.6, label=f"{head} heads")
        front_pts = sorted(members, key=lambda p: p.values[cost])
        ax.plot([p.values[cost] for p in front_pts],
                [100 * p.values[accuracy] for p in front_pts], "o-", color="C1",
                label="Pareto front")
        if marked:
            ax.scatter([p.values[cost] for p in marked],
                       [100 * p.values[accuracy] for p in marked], marker="*", s=200,
                       color="red", label="the paper's configuration", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(f"{cost} (lower is cheaper)")
        ax.set_ylabel(f"{accuracy} %")
        ax.legend(fontsize=8)
        ax.set_title("Accuracy against parallel cost")
    return _figure(draw)


def front_parts(store: Store, record: StudyRecord) -> tuple[list[str], list[Table]]:
    """The Pareto front of a multi-objective study: its figure and its table."""
    from study.pareto import finished_points, front
    from study.space import load_space

    objectives = record.plan["objectives"]
    points = finished_points(record.trials, objectives)
    if not points:
        return ["<p>No finished trial reports every objective yet.</p>"], []
    members = front(points, objectives)
    first = {}
    try:
        space = load_space(record.plan["space_file"])
        first = dict(space.points_to_evaluate[0]) if space.points_to_evaluate else {}
    except ConfigError:
        pass
    marked = [p for p in points
              if first and all(_same(p.params.get(k), v) for k, v in first.items())]
    names = [m for m, _ in objectives]
    table = Table(
        f"Pareto front over {', '.join(f'{m} ({mode})' for m, mode in objectives)}: "
        f"{len(members)} of {len(points)} finished trials",
        ["trial", "K", "head", "T", "slope", "tau", *names],
        [[p.trial_id, str(p.params.get("K")), str(p.params.get("head", "paper")),
          _t_text(p.params.get("threshold")), f"{p.params.get('threshold_slope', 0):.3g}",
          f"{p.params.get('tau', 0.5):.3g}",
          *(_pct(p.values[n]) if n.endswith("_acc") else _si(p.values[n]) for n in names)]
         for p in sorted(members, key=lambda p: p.values[names[-1]])],
        "Stopped-early and diverged trials never enter the front."
        + ("" if marked else " No finished trial ran the space's first point (the paper's)."),
    )
    parts = ['<h3 id="front">Accuracy against parallel cost</h3>',
             fig_front(points, members, objectives, marked), table.html()]
    return parts, [table]


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-9
    return a == b


def fig_history(values: list[tuple[int, float]], metric: str = "knn_val_acc",
                maximize: bool = True) -> str:
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
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title("Parameter importances for the objective")
    return _figure(draw, size=(6.4, 2.8))


def fig_kept(series: dict[str, dict[int, list[tuple[int, float]]]]) -> str:
    """series: run label -> ``{block: [(epoch, kept_pos), ...]}`` and ``kept_neg`` (Fig. 5)."""
    def draw(fig):
        import matplotlib.pyplot as plt

        axes = fig.subplots(1, 2, sharey=True)
        styles = ["-", "--"]
        for (label, kinds), ls in zip(series.items(), styles):
            for ax, kind in zip(axes, ("kept_pos", "kept_neg")):
                blocks = kinds[kind]
                cmap = plt.get_cmap("viridis")
                for k, points in blocks.items():
                    x, y = zip(*points)
                    ax.plot(x, y, ls, marker="o", markersize=3,
                            color=cmap((k - 1) / max(1, len(blocks) - 1)),
                            label=f"{label} block {k}")
        for ax, name in zip(axes, ("positive", "negative")):
            ax.set_title(f"{name} pairs kept")
            ax.set_xlabel("epoch")
        axes[0].set_ylabel("fraction kept")
        axes[1].legend(fontsize=6, ncol=2)
    return _figure(draw, size=(9, 3.8))


def fig_spectra(spectra: dict[str, list[np.ndarray]]) -> str:
    def draw(fig):
        import matplotlib.pyplot as plt

        axes = fig.subplots(1, len(spectra), sharey=True, squeeze=False)[0]
        for ax, (label, blocks) in zip(axes, spectra.items()):
            cmap = plt.get_cmap("viridis")
            for k, s in enumerate(blocks):
                ax.plot(np.arange(1, len(s) + 1), np.maximum(s, 1e-12),
                        color=cmap(k / max(1, len(blocks) - 1)), label=f"block {k + 1}")
            ax.set_yscale("log")
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("index")
        axes[0].set_ylabel("normalised singular value")
        axes[-1].legend(fontsize=6, ncol=2)
    return _figure(draw, size=(4.5 * len(spectra), 3.8))


def fig_probes(probes: dict[str, list[float]]) -> str:
    def draw(fig):
        ax = fig.add_subplot()
        for label, acc in probes.items():
            ax.plot(range(1, len(acc) + 1), 100 * np.array(acc), "o-", label=label)
        ax.set_xlabel("block k")
        ax.set_xticks(range(1, max(len(a) for a in probes.values()) + 1))
        ax.set_ylabel("linear probe test %")
        ax.legend(fontsize=8)
        ax.set_title("Probe accuracy per block")
    return _figure(draw)


# ----------------------------------------------------------------------------------------------
# The report


def compared_trials(record: StudyRecord) -> dict[str, Trial]:
    """The best trial, and the best trial of the same K on the other side of T = none. In a
    grid, the best of its deepest split: the paper draws these figures at its deepest K."""
    pool = record.finished
    if record.kind in ("grid", "rerun"):
        deepest = max(t.K for t in pool)
        pool = [t for t in pool if t.K == deepest]
    best = pool[0]
    peers = [t for t in pool if t.K == best.K and t is not best
             and (t.threshold is None) != (best.threshold is None)]
    out = {f"best: {_label(best)}": best}
    if peers:
        out[f"{'T = none' if peers[0].threshold is None else 'best with T'}: "
            f"{_label(peers[0])}"] = peers[0]
    return out


def _label(t: Trial) -> str:
    return f"K={t.K} T={_t_text(t.threshold)} seed={t.params.get('seed', 0)} ({t.trial_id})"


def paper_figures(store: Store, record: StudyRecord) -> list[str]:
    """Fig. 5, 1b and 2 for the compared trials, from their metric histories and artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    runs = compared_trials(record)
    parts = [f"<p>{html.escape(' against '.join(runs))}</p>"]
    kept = {}
    for label, t in runs.items():
        if t.threshold is None:
            continue  # Eq. (1) keeps every pair
        kept[label.split(":")[0]] = {
            kind: {k: sorted((int(m.step), m.value) for m in
                             client.get_metric_history(t.run_id, f"{kind}_block{k}"))
                   for k in range(1, t.K + 1)}
            for kind in ("kept_pos", "kept_neg")}
    if kept:
        parts += ["<h3>Pairs kept per block over training (Fig. 5)</h3>", fig_kept(kept)]
    spectra = {}
    with tempfile.TemporaryDirectory() as d:
        for label, t in runs.items():
            try:
                path = Path(client.download_artifacts(t.run_id, "spectra", d + "/" + t.run_id))
            except Exception as e:  # noqa: BLE001 - an artifact store can fail many ways
                parts.append(f"<p>spectra of {html.escape(t.trial_id)} unavailable: "
                             f"{html.escape(type(e).__name__)}</p>")
                continue
            spectra[label] = [np.load(path / f"block_{k}.npy") for k in range(1, t.K + 1)
                              if (path / f"block_{k}.npy").exists()]
    if spectra:
        parts += ["<h3>Spectra of each block's representation (Fig. 1b)</h3>",
                  fig_spectra(spectra)]
    probes = {label.split(":")[0]: [t.metrics[f"probe_test_acc_block{k}"]
                                    for k in range(1, t.K + 1)]
              for label, t in runs.items()
              if all(f"probe_test_acc_block{k}" in t.metrics for k in range(1, t.K + 1))}
    if probes:
        parts += ["<h3>Linear probes per block (Fig. 2)</h3>", fig_probes(probes)]
    return parts


def optuna_parts(store: Store, record: StudyRecord) -> tuple[list[str], list[Table]]:
    import optuna

    parts, tables = [], []
    try:
        study = optuna.load_study(study_name=f"{record.dataset}/{record.name}",
                                  storage=store.optuna_url)
    except KeyError:
        return [f"<p>No Optuna study {record.dataset}/{record.name} in the store.</p>"], []
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Several objectives: the history and the importances are those of the first.
    first, maximize = record.plan.get("objectives", [["knn_val_acc", "max"]])[0][0], (
        study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    values = [(t.number, t.values[0]) for t in done if t.values]
    if values:
        parts += [f"<h3>Optimisation history ({html.escape(first)})</h3>",
                  fig_history(values, first, maximize)]
    if len(done) < MIN_IMPORTANCE_TRIALS:  # with fewer, fANOVA returns equal shares
        parts.append(f"<p>Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed "
                     f"trials; Optuna has {len(done)}.</p>")
        return parts, tables
    try:
        importances = optuna.importance.get_param_importances(
            study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (RuntimeError, ValueError) as e:
        parts.append(f"<p>No parameter importances: "
                     f"{html.escape(' '.join(str(e).split()))}.</p>")
    else:
        parts += ["<h3>Parameter importances (optuna.importance, fANOVA)</h3>",
                  fig_importances(importances),
                  f'<p class="note">For {html.escape(first)} over Optuna\'s completed trials: '
                  'the finished ones and the diverged ones (at 0); trials stopped early are '
                  'PRUNED and left out.</p>']
        tables.append(Table("Parameter importances", ["parameter", "importance"],
                            [[k, f"{v:.3f}"] for k, v in importances.items()]))
    return parts, tables


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; }
th { background: #eee; } td:first-child { text-align: left; }
.note { color: #555; font-size: 12px; } img { max-width: 100%; }
"""


def build(store: Store, record: StudyRecord) -> tuple[str, list[Table]]:
    """The report's HTML and the tables it shows (printed to the terminal too)."""
    tables: list[Table] = []
    sections: list[str] = []
    if record.kind in ("grid", "rerun"):
        tables.append(grid_table(record))
        gain = gain_table(record)
        if gain is not None:
            tables.append(gain)
        sections.append('<h2 id="grid">Cells over seeds</h2>'
                        + "".join(t.html() for t in tables))
        if len({t.threshold for t in record.trials}) > 2:
            sections.append(fig_accuracy_vs_threshold(record, "linear_test_acc",
                                                      "linear test"))
    else:
        best = best_per_K_table(record)
        tables.append(best)
        sections.append('<h2 id="search">Search</h2>' + best.html())
        sections.append("<h3>The T landscape</h3>"
                        + fig_accuracy_vs_threshold(record, "knn_val_acc", "kNN val (objective)")
                        + fig_tau(record))
        if len(record.plan.get("objectives") or []) > 1:
            parts, extra = front_parts(store, record)
            tables += extra
            sections.append("".join(parts))
        parts, extra = optuna_parts(store, record)
        tables += extra
        sections.append("".join(parts))
    sections.append('<h2 id="figures">The paper\'s figures for the best trial</h2>'
                    + "".join(paper_figures(store, record)))
    every = trials_table(record)
    tables.append(every)
    sections.append('<h2 id="trials">Trials</h2>' + every.html())
    p = record.plan
    head = (f"{record.kind} study of {record.dataset}"
            + (f", grid {record.grid}" if record.grid else "")
            + f", budget {p.get('budget')}: {len(record.trials)} trial(s) of {p.get('trials')}, "
            f"{p.get('epochs') or 'their own'} epochs, seeds from {p.get('seed')}"
            + (f" x {p.get('seeds')}" if record.kind != "search" else ""))
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(record.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(record.name)}</h1><p>{html.escape(head)}. MLflow parent run "
            f"{record.parent_run_id}; written {time.strftime('%Y-%m-%d %H:%M')} from the store, "
            f"nothing re-trained. Chosen on validation accuracy; test accuracy reported only."
            f"</p>{''.join(sections)}</body></html>")
    return page, tables


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.report", __doc__)
    p.add_argument("--dataset", default=None,
                   help="with no --study: report this data set's latest study (default digits)")
    p.add_argument("--study", default=None, help="a study name (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="default: reports/<study>/")
    p.add_argument("--store", default="mlruns")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store = Store.at(args.store, args.tracking_uri)
    study = args.study or store.latest_study(args.dataset or "digits")
    record = load_study(store, study)
    if args.dataset and record.dataset != args.dataset:
        raise ConfigError(f"study {study!r} is of {record.dataset}, not --dataset {args.dataset}")
    page, tables = build(store, record)
    out = (args.out or Path("reports") / study).resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(page)
    for table in tables:
        log("\n" + table.text())
    from mlflow.tracking import MlflowClient

    MlflowClient(store.tracking_uri).log_artifact(record.parent_run_id, str(path), ARTIFACT_DIR)
    log(f"\nwrote {path} ({len(page) // 1024} KiB, self-contained) and logged it to the study's "
        f"parent run as {ARTIFACT_DIR}/{REPORT_FILE}")
    return 0


if __name__ == "__main__":
    run(main)
