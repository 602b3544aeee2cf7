"""The end-of-study work, once, on the run that completes a study: what a killed driver left
open closed, the table of the best trials, the best encoder on the parent run and registered,
the parent run FINISHED, the disk held, what to run next. Each step is safe to repeat: a driver
stopped in the middle does it again on ``--resume``."""

from __future__ import annotations

import time

from study.engine.checkpoints import sweep_checkpoints
from study.engine.console import log
from study.engine.registry import register_best
from study.engine.resume.lost import close_lost_runs, close_running_trials
from study.engine.summary import print_table
from study.records.browse import runs_url
from study.records.footprint import study_footprint
from study.records.plan import Plan
from study.records.store import Store
from study.records.trials import BEST_RUN, candidates, study_rows


def finish(store: Store, plan: Plan) -> None:
    """The end-of-study work, once, on the run that completes the study: close what a killed
    driver left open, the summary, the best encoder's registration, the parent run FINISHED,
    then the record says ``completed``. A driver stopped in the middle does it again on
    ``--resume``; each step is safe to repeat."""
    close_leftovers(store, plan)
    folder = store.ray_dir / plan.study
    freed = sweep_checkpoints(folder, {}) if folder.is_dir() else 0
    if freed:
        log(f"checkpoints: {freed / 1e6:.1f} MB of ended trials' weights deleted (left by a "
            f"driver's stop)")
    _summarise(store, plan)
    plan.completed = time.time()
    plan.save(store)


def close_leftovers(store: Store, plan: Plan) -> None:
    """Close what a killed driver (SIGKILL, power loss) left open, once every trial has ended.

    A driver killed between creating a trial's run (or Optuna trial) and Ray's next save of the
    experiment state leaves that run RUNNING: the resumed study does not know the trial and
    samples another in its place (``study.engine.resume.lost`` closes such runs on resume). Every
    tracked trial is closed by the tracking callback, so a trial run still RUNNING here is such
    a leftover: it ends KILLED, tagged ``lost``. Optuna's RUNNING trials end FAIL, so that the
    sampler and the report never wait on them.
    """
    lost = close_lost_runs(store, plan, keep=None)
    failed = close_running_trials(store, plan) if plan.kind == "search" else 0
    if lost or failed:
        log(f"closed what a killed driver left open: {lost} MLflow run(s) (now KILLED, "
            f"tag lost), {failed} Optuna trial(s) (now FAIL)")


def _summarise(store: Store, plan: Plan) -> None:
    """The table of the best trials (and a --compare study's answer), the best one on the
    parent run and registered, the parent FINISHED, the disk held, what to run next."""
    study, dataset, parent_run_id = plan.study, plan.dataset, plan.parent_run_id
    rows = study_rows(store, dataset, study)
    print_table(rows, study, objectives=plan.objectives)
    if plan.compare:  # a --compare study: its answer
        from study.records.compare_tables import attribution_table, comparison_table

        log("\n" + comparison_table(rows, plan).text())
        attributed = attribution_table(rows, plan)
        if attributed is not None:
            log("\n" + attributed.text())
    best = next((r for r in candidates(rows) if r.model_uri), None)
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
