"""A study read back from the store, and the numbers each table and figure of its report shows.

Everything here reads (MLflow, Optuna) or computes, and nothing formats or draws: the tables
(``tables``) and the figures (``figures``) take what these functions gather, so that what a report
says can be checked on made-up trials, without a store or a plot. Which trials count, each split's
best and its counts are ``study.records.trials``' one rule (``TrialRecord.finished``,
``best_per_split``, ``split_counts``): trials are ranked on validation accuracy only; test accuracy
is carried along, never used to choose.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.records.formatting import t_text
from study.records.pareto import Point, finished_points, front
from study.records.plan import Plan
from study.records.store import Store
from study.records.trials import TrialRecord as Trial
from study.records.trials import best_per_split, candidates, counted, read_trials
from trainables.errors import ConfigError
from trainables.paper import PAPER_T, PROTOCOL, PaperCell, paper_cell

# A run's kept ratios (Fig. 5): {"kept_pos": {block: [(epoch, fraction), ...]}, "kept_neg": ...}
Kept = dict[str, dict[int, list[tuple[int, float]]]]


@dataclass
class StudyRecord:
    name: str
    dataset: str
    kind: str  # search, grid, rerun or compare (Plan.kind)
    grid: str
    parent_run_id: str
    experiment_id: str
    trials: list[Trial]
    plan: Plan  # the saved plan (study.records.plan)

    @property
    def finished(self) -> list[Trial]:
        """The trials the answer is chosen among, best first (``trials.candidates``)."""
        return candidates(self.trials)


def gather_study(store: Store, study: str) -> StudyRecord:
    """The study's plan and every trial run of it; one line when there is nothing to report."""
    plan = Plan.load(store, study)  # names the known studies when ``study`` is not one
    trials = read_trials(store, plan.dataset, study)
    record = StudyRecord(study, plan.dataset, plan.kind, plan.grid, plan.parent_run_id,
                         plan.experiment_id,
                         sorted(trials, key=lambda t: t.trial_id), plan)
    if not record.finished:
        states = Counter(t.state for t in trials)
        raise ConfigError(
            f"study {study!r} has no finished trial to report yet "
            f"({', '.join(f'{n} {s}' for s, n in states.items()) or 'no trial started'}); "
            f"run the report again once one has finished"
        )
    return record


# What the tables show


@dataclass
class Cell:
    """A grid cell (or re-run point): what its seeds share."""

    name: str
    finished: list[Trial]  # in the order the trials were made
    trials: int  # every trial of the cell, finished or not
    paper: PaperCell | None  # the paper's figure for it, where the paper reports one


def cells(record: StudyRecord) -> list[Cell]:
    """Every cell, in the order the trials were made, with its finished trials (a lost run is
    none of the cell's trials: another took its place)."""
    trials = counted(record.trials)
    first: dict[str, Trial] = {}
    for t in trials:
        first.setdefault(t.cell, t)
    every = Counter(t.cell for t in trials)
    return [Cell(name, [t for t in trials if t.cell == name and t.finished], every[name],
                 paper_cell(record.dataset, p.K, p.threshold, p.params.get("subsample", "both"),
                            p.params.get("tau", PROTOCOL.tau)))
            for name, p in first.items()]


def paired_gains(record: StudyRecord) -> list[tuple[tuple, list[float]]]:
    """Per (K, T, subsample, tau) with a T: each seed's linear test accuracy minus that of the
    Eq. (1) trial of the same K, tau and seed (both pair kinds, else the same subsample), by K
    then T; a key without an Eq. (1) trial is left out."""
    by: dict[tuple, dict[int, float]] = {}
    for t in record.finished:
        p = t.params
        key = (t.K, t.threshold, p.get("subsample", "both"), p.get("tau"))
        by.setdefault(key, {})[p.get("seed", 0)] = t.metrics["linear_test_acc"]
    out = []
    for (K, T, sub, tau), accs in sorted(by.items(), key=lambda kv: _order(kv[0])):
        none = by.get((K, None, "both", tau)) or by.get((K, None, sub, tau))
        if T is None or not none:
            continue
        seeds = sorted(set(accs) & set(none))
        out.append(((K, T, sub, tau), [accs[s] - none[s] for s in seeds]))
    return out


def _order(key: tuple) -> tuple:
    K, T, sub, tau = key
    return (K, -2 if T is None else T, sub, tau or 0)


def paper_gain(dataset: str, K: int, T: float, sub: str, tau: float) -> float | None:
    """The paper's own gain of Eq. (5) over Eq. (1) in points of %, where it reports both."""
    ours, simclr = paper_cell(dataset, K, T, sub, tau), paper_cell(dataset, K, None)
    return ours.accuracy - simclr.accuracy if ours and simclr else None


def best_per_K(record: StudyRecord) -> list[Trial]:
    """The best finished trial of each K (on validation accuracy), by K."""
    return list(best_per_split(record.trials).values())


# What the figures show


@dataclass
class ThresholdPoints:
    """Every trial's value of one metric against T (the landscape), by K and by fate."""

    Ks: list[int]  # every K of the study, each its colour
    points: dict[tuple[int, str], list[tuple[float, float]]]  # (K, state) -> [(T, value)]
    left: float  # where T = none (Eq. (1)) stands: left of every T
    has_none: bool  # a trial ran Eq. (1)
    paper_T: float | None  # the paper's T for the data set


def threshold_points(record: StudyRecord, metric: str) -> ThresholdPoints:
    """Every trial's ``metric`` against its T (Eq. (1) at the left edge), whatever its fate."""
    trials = record.trials
    left = min([t.threshold for t in trials if t.threshold is not None] or [0]) - 0.15
    points: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for t in trials:
        if t.metrics.get(metric) is not None:
            x = left if t.threshold is None else t.threshold
            points.setdefault((t.K, t.state), []).append((x, t.metrics[metric]))
    return ThresholdPoints(sorted({t.K for t in trials}), points, left,
                           any(t.threshold is None for t in trials),
                           PAPER_T.get(record.dataset))


def tau_points(record: StudyRecord) -> dict[str, list[tuple[float, float]]]:
    """By fate: each trial's (tau, kNN validation accuracy), the objective of a search."""
    points: dict[str, list[tuple[float, float]]] = {}
    for t in record.trials:
        if "knn_val_acc" in t.metrics:
            points.setdefault(t.state, []).append((t.params.get("tau", PROTOCOL.tau),
                                                   t.metrics["knn_val_acc"]))
    return points


@dataclass
class Front:
    """A multi-objective study's finished trials as its Pareto front sees them."""

    objectives: list  # [metric, mode] pairs
    points: list[Point]  # every finished trial with all its objectives' values
    members: list[Point]  # the front
    marked: list[Point]  # those that ran the space's first point (the paper's configuration)


# The costs a front can put accuracy against: the parallel step's MACs (counted) and its
# wall-clock time (measured; pipelined trials run their blocks at once).
COST_AXES = ("max_block_head_macs", "step_seconds")


def pareto_fronts(record: StudyRecord) -> list[Front]:
    """The study's own front, then accuracy against each cost axis it did not optimise, over the
    same finished trials (every run logs both costs)."""
    own = pareto_front(record)
    if own is None:
        return []
    objectives = record.plan.objectives
    names = [m for m, _ in objectives]
    accuracy = next(o for o in objectives if o[0] in ("knn_val_acc", "linear_val_acc"))
    fronts = [own]
    for axis in COST_AXES:
        if axis not in names:
            other = pareto_front(record, [list(accuracy), [axis, "min"]])
            if other is not None:
                fronts.append(other)
    return fronts


def pareto_front(record: StudyRecord, objectives: list | None = None) -> Front | None:
    """The front of a multi-objective study (over ``objectives``, default its own); None while
    no finished trial reports every objective."""
    from study.spaces.loading import load_space

    objectives = objectives or record.plan.objectives
    points = finished_points(record.trials, objectives)
    if not points:
        return None
    first = {}
    try:
        space = load_space(record.plan.space_file)
        first = dict(space.points_to_evaluate[0]) if space.points_to_evaluate else {}
    except ConfigError:
        pass
    marked = [p for p in points
              if first and all(_same(p.params.get(k), v) for k, v in first.items())]
    return Front(objectives, points, front(points, objectives), marked)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-9
    return a == b


def compared_trials(record: StudyRecord) -> dict[str, Trial]:
    """The trials whose figures the report draws. A search: the best trial of each split (the
    answer is per K; the best overall is often one block, end-to-end SimCLR). A grid: the best
    of its deepest split (the paper draws these figures at its deepest K), and the best of the
    same K on the other side of T = none."""
    if record.kind == "search":
        return {f"best K={t.K}: {_label(t)}": t for t in best_per_K(record)}
    pool = record.finished
    deepest = max(t.K for t in pool)
    pool = [t for t in pool if t.K == deepest]
    best = pool[0]
    peers = [t for t in pool if t is not best
             and (t.threshold is None) != (best.threshold is None)]
    out = {f"best: {_label(best)}": best}
    if peers:
        out[f"{'T = none' if peers[0].threshold is None else 'best with T'}: "
            f"{_label(peers[0])}"] = peers[0]
    return out


def _label(t: Trial) -> str:
    return f"K={t.K} T={t_text(t.threshold)} seed={t.params.get('seed', 0)} ({t.trial_id})"


def kept_series(client, runs: dict[str, Trial]) -> dict[str, Kept]:
    """Fig. 5: each compared trial's kept ratios per block over epochs, from its metric history,
    by the label's first part; Eq. (1) keeps every pair, and a trial with no history is left out.
    """
    kept = {}
    for label, t in runs.items():
        if t.threshold is None:
            continue
        series = {kind: {k: sorted((int(m.step), m.value) for m in
                                   client.get_metric_history(t.run_id, f"{kind}_block{k}"))
                         for k in range(1, t.K + 1)}
                  for kind in ("kept_pos", "kept_neg")}
        if any(any(blocks.values()) for blocks in series.values()):
            kept[label.split(":")[0]] = series
    return kept


def read_spectra(client, runs: dict[str, Trial]
                 ) -> tuple[dict[str, list[np.ndarray]], list[tuple[str, str]]]:
    """Fig. 1b: each compared trial's spectra per block, from its artifacts; and the (trial id,
    error) of those that could not be read."""
    spectra, missing = {}, []
    with tempfile.TemporaryDirectory() as d:
        for label, t in runs.items():
            try:
                path = Path(client.download_artifacts(t.run_id, "spectra", d + "/" + t.run_id))
            except Exception as e:  # noqa: BLE001 - an artifact store can fail many ways
                missing.append((t.trial_id, type(e).__name__))
                continue
            spectra[label] = [np.load(path / f"block_{k}.npy") for k in range(1, t.K + 1)
                              if (path / f"block_{k}.npy").exists()]
    return spectra, missing


def probe_series(runs: dict[str, Trial]) -> dict[str, list[float]]:
    """Fig. 2: each compared trial's probe test accuracy per block, where it has all K."""
    return {label.split(":")[0]: [t.metrics[f"probe_test_acc_block{k}"]
                                  for k in range(1, t.K + 1)]
            for label, t in runs.items()
            if all(f"probe_test_acc_block{k}" in t.metrics for k in range(1, t.K + 1))}
