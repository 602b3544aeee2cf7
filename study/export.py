"""``python -m study.export``: the best T (with tau) of a study, overall and for each K, as YAML.

Ranked by validation accuracy (linear evaluation, then the kNN monitor); test accuracy is
carried along, never used to choose. The file feeds back into ``python -m study.train --config``
and ``python -m study.tune --config`` (the chosen points, re-run with several seeds).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from study._cli import log, parser, run
from study.exportfile import CONFIG_KEYS, load_export, points  # noqa: F401 (the file's API)
from study.pareto import finished_points, front
from study.records import TrialRecord
from study.store import Store
from study.strata import study_splits
from study.summary import study_rows
from trainables.errors import ConfigError
from trainables.specs import SPECS


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
    if not store.study_file(study).is_file():
        return [["knn_val_acc", "max"]]
    return store.load_study(study).get("objectives") or [["knn_val_acc", "max"]]


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.export", __doc__)
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(SPECS)}")
    p.add_argument("--study", default=None, help="default: the latest study of --dataset")
    p.add_argument("--out", type=Path, default=None, help="default: best_<study>.yaml")
    p.add_argument("--store", default="mlruns")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    store = Store.at(args.store, args.tracking_uri)
    study = args.study or store.latest_study(args.dataset)
    data = export(store, args.dataset, study)
    out = args.out or Path(f"best_{study}.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    best = data["best"]
    log(f"best of {study}: T={best['config'].get('threshold')} tau={best['config'].get('tau')} "
        f"K={best['config'].get('K')}  linear val {best['linear_val_acc']:.4f} "
        f"test {best['linear_test_acc']:.4f}")
    missing = data.get("K_without_finished_trial", {})
    for K in sorted({*data["per_K"], *missing}):
        if K in missing:
            log(f"  K={K}: no best T: {missing[K]['why']}")
            continue
        e = data["per_K"][K]
        log(f"  K={K}: T={e['config'].get('threshold')} tau={e['config'].get('tau')}  "
            f"val {e['linear_val_acc']:.4f} test {e['linear_test_acc']:.4f}  "
            f"(best of {e['finished']} finished, {e['trials']} trial(s))")
    if "pareto" in data:
        names = [o["metric"] for o in data["objectives"]]
        log(f"Pareto front over {', '.join(names)}: {len(data['pareto'])} trial(s)")
        for e in data["pareto"]:
            c = e["config"]
            log(f"  K={c.get('K')} head={c.get('head', 'paper')} T={c.get('threshold')} "
                f"slope={c.get('threshold_slope', 0)} tau={c.get('tau')}  "
                + "  ".join(f"{n} {e['objectives'][n]:.4g}" for n in names))
    log(f"wrote {out}; reproduce with: python -m study.train --config {out}")
    return 0


if __name__ == "__main__":
    run(main)
