"""The end of a study on the console: the table of its best trials, then what it holds and
what to run next; ``study_rows`` is the study read back, best first (``study.export`` too)."""

from __future__ import annotations

from study._cli import log
from study.footprint import study_footprint
from study.records import (
    BEST_RUN,
    TrialRecord,
    experiment_of,
    ranked,
    read_trials,
)
from study.registry import register_best
from study.store import Store, runs_url
from trainables.errors import ConfigError


def study_rows(store: Store, dataset: str, study: str) -> list[TrialRecord]:
    """Every trial run of ``study`` (one per trial), best first by validation accuracy."""
    if experiment_of(store, dataset) is None:
        raise ConfigError(f"no MLflow experiment {dataset!r} at {store.tracking_uri}")
    return ranked(read_trials(store, dataset, study))


def print_summary(store: Store, study: str, dataset: str, parent_run_id: str,
                  top: int = 10, objectives: list | None = None, plan: dict | None = None
                  ) -> None:
    """The end-of-study work's console and records: the table of the best trials, the best
    one on the parent run and registered, the parent FINISHED, the disk held, what to run next.
    Each step is safe to repeat (``study.lifecycle.finish``)."""
    rows = study_rows(store, dataset, study)
    print_table(rows, study, top, objectives)
    if plan is not None and plan.get("compare"):  # a --compare study: its answer
        from study.compare import comparison_table

        log("\n" + comparison_table(rows, plan).text())
    best = next((r for r in rows if r.model_uri and r.linear_val_acc is not None), None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    if best is not None:
        client.log_metric(parent_run_id, "best_linear_val_acc", best.linear_val_acc)
        client.set_tag(parent_run_id, BEST_RUN, best.run_id)
        register_best(store, best, f"{study}-encoder")
    client.set_terminated(parent_run_id, "FINISHED")
    parent = client.get_run(parent_run_id)
    footprint = study_footprint(store, study, dataset,
                                [parent.info.artifact_uri, *(r.artifact_uri for r in rows)])
    if footprint is not None:
        mb = {k: v / 1e6 for k, v in footprint.items() if k != "kept_encoders"}
        log(f"\ndisk: {mb['total']:.1f} MB ({mb['artifacts']:.1f} MB of MLflow artifacts, "
            f"{mb['encoders']:.1f} MB of them the {footprint['kept_encoders']} kept encoder(s); "
            f"{mb['ray']:.1f} MB of Ray Tune state)")
    log(f"\nexport the best T per K:  python -m study.export --dataset {dataset} --study {study}"
        + store.flag)
    log(f"the study's report:       python -m study.report --study {study}" + store.flag)
    experiment_id = parent.info.experiment_id
    log("browse every trial:       python -m study.ui" + store.flag
        + f", then open {runs_url(experiment_id)}")


def print_table(rows: list[TrialRecord], study: str, top: int = 10,
                objectives: list | None = None) -> None:
    """The best ``top`` trials (every Pareto front member first in a multi-objective study)."""
    on_front: set[str] = set()
    if objectives and len(objectives) > 1:
        from study.pareto import finished_points, front

        members = front(finished_points(rows, objectives), objectives)
        on_front = {p.run_id for p in members}
        # Every front member is shown, then the best of the rest.
        rows = sorted(rows, key=lambda r: r.run_id not in on_front)
        top = max(top, len(on_front))
        log(f"\nPareto front over {', '.join(m for m, _ in objectives)}: {len(on_front)} of "
            f"the finished trials (marked 'front')")
    log(f"\n{study}: {len(rows)} trial run(s), best first by validation accuracy "
        f"(test accuracy is reported, never used to choose)")
    header = (f"{'trial':<14}{'T':>7}{'tau':>7}{'K':>4}  {'knn val':>8}{'lin val':>9}"
              f"{'lin test':>9}  state")
    splits = sorted({r.K for r in rows})
    if on_front or len(splits) < 2:
        log(header)
        for row in rows[:top]:
            log(_line(row, on_front))
        return
    # The answer is per split: each K's best, under a line that says what became of its trials.
    per_split = max(3, top // len(splits))
    log(header)
    for K in splits:
        at = [r for r in rows if r.K == K]
        done = sum(r.finished for r in at)
        log(f"-- K={K}: {len(at)} trial(s), {done} finished, "
            f"{sum(r.early_stopped for r in at)} stopped early, {sum(r.diverged for r in at)} "
            f"diverged" + (f"; the best {per_split} shown" if len(at) > per_split else ""))
        for row in at[:per_split]:
            log(_line(row, on_front))


def _line(row: TrialRecord, on_front: set[str]) -> str:
    state = ("diverged" if row.diverged else "stopped early" if row.early_stopped
             else row.status.lower())
    if row.run_id in on_front:
        state += ", front"
    return (f"{row.trial_id:<14}{_fmt(row.params.get('threshold')):>7}"
            f"{_fmt(row.params.get('tau')):>7}{row.params.get('K', ''):>4}  "
            f"{_fmt(row.knn_val_acc):>8}{_fmt(row.linear_val_acc):>9}"
            f"{_fmt(row.linear_test_acc):>9}  {state}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) and abs(v) <= 1 else f"{v:.3g}"
