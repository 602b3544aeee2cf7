"""A ``study.export`` file: what it holds (the best T per K from a study's records) and the
chosen configurations read back, for ``study.train --config`` and ``study.tune --config``."""

from __future__ import annotations

from pathlib import Path

from study.records.pareto import finished_points, front
from study.records.plan import Plan, study_splits
from study.records.store import Store
from study.records.trials import (
    Counts,
    TrialRecord,
    best_per_split,
    candidates,
    split_counts,
    study_rows,
)
from study.spaces.loading import read_yaml
from study.spaces.types import DEFAULT_OBJECTIVES
from trainables.config import TrainConfig
from trainables.errors import ConfigError

CONFIG_KEYS = [k for k in TrainConfig.__dataclass_fields__ if k not in ("device", "download")]


def load_export(path: str | Path, K: int | None = None) -> dict:
    """The training configuration in an export file: the best, or the best for ``K``."""
    data = _read(path)
    if K is None:
        return dict(data["best"]["config"])
    if K not in data["per_K"]:
        raise ConfigError(f"{path} has no entry for K={K}; it has K in "
                          f"{', '.join(map(str, data['per_K']))}")
    return dict(data["per_K"][K]["config"])


def points(path: str | Path) -> list[dict]:
    """Every distinct configuration of an export file (best and per K)."""
    data = _read(path)
    configs = [data["best"]["config"], *(e["config"] for e in data["per_K"].values())]
    unique = []
    for c in configs:
        if c not in unique:
            unique.append(c)
    return unique


def _read(path: str | Path) -> dict:
    data = read_yaml(path, "config file")
    if not isinstance(data, dict) or "best" not in data or "per_K" not in data:
        raise ConfigError(f"{path} is not a study.export file (no 'best' / 'per_K')")
    return data


def export(store: Store, dataset: str, study: str) -> dict:
    rows = study_rows(store, dataset, study)
    finished = candidates(rows)
    if not finished:
        raise ConfigError(f"study {study!r} has no finished trial with a linear evaluation yet")

    def entry(row: TrialRecord) -> dict:
        return {
            "config": {k: row.params[k] for k in CONFIG_KEYS if k in row.params},
            "linear_val_acc": row.linear_val_acc,
            "linear_test_acc": row.linear_test_acc,
            "knn_val_acc": row.knn_val_acc,
            "trial_id": row.trial_id,
            "run_id": row.run_id,
            "model_uri": row.model_uri,
        }

    # Every split the study covers, with what became of a split that has no finished trial.
    counts = split_counts(rows, study_splits(store, study))
    best = best_per_split(rows)
    per_k = {K: {**entry(row), **_counts(counts[K])} for K, row in best.items()}
    unfinished = {K: {**_counts(c), "why": _why(c)} for K, c in counts.items() if K not in best}
    total = Counts.of(rows)
    out = {
        "dataset": dataset,
        "study": study,
        "ranked_by": "linear_val_acc (validation split), then knn_val_acc",
        "trials": {"total": total.trials, **_counts(total, "trials")},
        "best": entry(finished[0]),
        "per_K": per_k,
    }
    if unfinished:
        out["K_without_finished_trial"] = unfinished
    objectives = study_objectives(store, study)
    if len(objectives) > 1:
        members = front(finished_points(rows, objectives), objectives)
        out["objectives"] = [{"metric": m, "mode": mode} for m, mode in objectives]
        out["pareto"] = [
            {"config": {k: p.params[k] for k in CONFIG_KEYS if k in p.params},
             "objectives": p.values, "trial_id": p.trial_id, "run_id": p.run_id}
            for p in members
        ]
    return out


def _counts(c: Counts, *leave_out: str) -> dict:
    """A split's (or the study's) counts as the file writes them; lost runs only where any."""
    out = {"trials": c.trials, "finished": c.finished, "stopped_early": c.stopped_early,
           "diverged": c.diverged, **({"lost_runs_left_out": c.lost} if c.lost else {})}
    return {k: v for k, v in out.items() if k not in leave_out}


def _why(c: Counts) -> str:
    lost = f"; {c.lost_text}" if c.lost else ""
    if not c.trials:
        return "no trial ran at this split" + lost
    parts = [f"{n} {name}" for n, name in ((c.stopped_early, "stopped early"),
                                           (c.diverged, "diverged")) if n]
    rest = c.trials - c.finished - c.stopped_early - c.diverged
    if rest:
        parts.append(f"{rest} not finished (failed or still running)")
    return f"{c.trials} trial(s), none finished: {', '.join(parts)}{lost}"


def study_objectives(store: Store, study: str) -> list:
    """The study's [metric, mode] pairs as its plan saved them (one: the kNN accuracy)."""
    default = [[o.metric, o.mode] for o in DEFAULT_OBJECTIVES]
    plan = Plan.find(store, study)
    return (plan.objectives if plan is not None else None) or default
