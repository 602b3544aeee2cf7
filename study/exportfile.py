"""A ``study.export`` file: what it holds (the best T per K from a study's records) and the
chosen configurations read back, for ``study.train --config`` and ``study.tune --config``."""

from __future__ import annotations

from pathlib import Path

from study.pareto import finished_points, front
from study.records import TrialRecord, study_rows
from study.space import DEFAULT_OBJECTIVES
from study.spacefile import read_yaml
from study.store import Store
from study.strata import study_splits
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
    finished = [r for r in rows if r.evaluated]
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

    per_k: dict[int, dict] = {}
    for row in finished:  # best first
        if row.K not in per_k:
            per_k[row.K] = {**entry(row), **_counts(rows, row.K)}
    # Every split the study covers, with what became of a split that has no finished trial.
    unfinished = {K: {**_counts(rows, K), "why": _why(rows, K)}
                  for K in sorted(set(study_splits(store, study)) | {r.K for r in rows})
                  if K not in per_k}
    out = {
        "dataset": dataset,
        "study": study,
        "ranked_by": "linear_val_acc (validation split), then knn_val_acc",
        "trials": {
            "total": len(rows),
            "finished": len(finished),
            "stopped_early": sum(r.early_stopped for r in rows),
            "diverged": sum(r.diverged for r in rows),
        },
        "best": entry(finished[0]),
        "per_K": dict(sorted(per_k.items())),
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


def _counts(rows: list[TrialRecord], K: int) -> dict:
    at = [r for r in rows if r.K == K]
    return {"trials": len(at), "finished": sum(r.evaluated for r in at),
            "stopped_early": sum(r.early_stopped for r in at),
            "diverged": sum(r.diverged for r in at)}


def _why(rows: list[TrialRecord], K: int) -> str:
    c = _counts(rows, K)
    if not c["trials"]:
        return "no trial ran at this split"
    parts = [f"{c[k]} {k.replace('_', ' ')}" for k in ("stopped_early", "diverged") if c[k]]
    rest = c["trials"] - c["stopped_early"] - c["diverged"]
    if rest:
        parts.append(f"{rest} not finished (failed, lost, or still running)")
    return f"{c['trials']} trial(s), none finished: {', '.join(parts)}"


def study_objectives(store: Store, study: str) -> list:
    """The study's [metric, mode] pairs as its plan saved them (one: the kNN accuracy)."""
    default = [[o.metric, o.mode] for o in DEFAULT_OBJECTIVES]
    if not store.study_file(study).is_file():
        return default
    return store.load_study(study).get("objectives") or default
