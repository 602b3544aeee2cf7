"""A study from its start to its end: the parent run and the record written together, the
trials run, and then either the end-of-study work (once, on the run that completes the study)
or a stop that says where the study stands and how to continue it.

Whether the study ended is read from Ray Tune's saved state (``study.records.ray_state``), never
from counts of results.
"""

from __future__ import annotations

import time

from study.engine import interrupts
from study.engine.cluster import init_ray, resources
from study.engine.console import log
from study.engine.finish import finish
from study.engine.provenance import git_commit
from study.engine.resume.saves import generations_dir, install_generation
from study.engine.tuner import make_tuner
from study.records import trials as records
from study.records.plan import Plan
from study.records.ray_state import saved_state
from study.records.store import Store
from study.spaces.loading import load_space
from study.spaces.strata import label
from study.spaces.types import SearchSpace
from trainables.data import prepare_data
from trainables.errors import ConfigError


def run(store: Store, plan: Plan, resume: bool, address: str | None = None,
        gpus: float | None = None, cpus: float | None = None, status_every: float = 60.0) -> int:
    """Run (or resume) the study to its end; ``interrupts.StudyStopped`` or ``KeyboardInterrupt``
    where it stops before."""
    space = load_space(plan.space_file)
    if resume:
        repaired = install_generation(store.ray_dir / plan.study,
                                      generations_dir(store, plan.study))
        if repaired:
            log(repaired)
        state = saved_state(store.ray_dir / plan.study, plan.trials)
        if state is not None and state.complete:
            if _parent_finished(store, plan):  # done before the record said so (an older one)
                plan.completed = time.time()
                plan.save(store)
                log(f"study {plan.study} is complete; nothing to resume")
                return 0
            # Every trial ended; the driver stopped during the end-of-study work.
            log(f"study {plan.study}: {state.describe()}; finishing its end-of-study work")
            finish(store, plan)
            return 0
    # The driver fetches the data once, before any trial: trials only read (no download races).
    prepare_data(plan.dataset, plan.data_dir)
    from study.engine.library_logs import log_libraries_to, stderr_to

    log_libraries_to(store.log_file(plan.study))
    with stderr_to(store.log_file(plan.study)):
        started_ray = init_ray(address)
    try:
        if resume:
            gpus, cpus = plan.gpus_per_trial, plan.cpus_per_trial
        plan.gpus_per_trial, plan.cpus_per_trial = resources(gpus, cpus, plan.concurrency,
                                                             space.max_stages)
        return _run_trials(store, plan, space, resume, status_every)
    finally:
        if started_ray:
            import ray

            with interrupts.shielded():
                ray.shutdown()


def _parent_finished(store: Store, plan: Plan) -> bool:
    """Whether the study's parent run is FINISHED: the last step of the end-of-study work."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(store.tracking_uri).get_run(plan.parent_run_id).info.status == "FINISHED"


def _run_trials(store: Store, plan: Plan, space: SearchSpace, resume: bool,
                status_every: float) -> int:
    log(f"study {plan.study}: {plan.dataset}, budget {plan.budget} ({plan.trials} trials x "
        f"{plan.epochs or 'their own'} epochs, {plan.concurrency} at once, "
        f"{plan.gpus_per_trial:g} GPU + {plan.cpus_per_trial:g} CPU each), "
        f"space {plan.space_file}")
    if plan.strata:
        log("each split its own search (trials, Optuna study, ASHA brackets): "
            + ", ".join(f"{label(s)} {n} trials" for s, n in zip(plan.strata, plan.shares)))
    if plan.grid:
        log(f"grid {plan.grid}: {len(space.grid(plan.grid))} cells x {plan.seeds} seeds "
            f"({plan.seed}..{plan.seed + plan.seeds - 1}), {space.grids[plan.grid]}")
    log(f"MLflow: {store.tracking_uri}   Optuna: {store.optuna_url}")
    log(f"Ray's, MLflow's and Optuna's own messages: {store.log_file(plan.study)}")
    if not resume:
        with interrupts.deferred():  # the parent run and the study's record: both or neither
            plan.experiment_id = store.experiment_id(plan.dataset)
            plan.parent_run_id = parent_run(store, plan, space)
            plan.save(store)
    from study.engine.library_logs import log_libraries_to

    # Again, Ray having set its loggers up once started: restoring a study reads Ray's saved
    # state, which warns of trials with no results yet.
    log_libraries_to(store.log_file(plan.study))
    tuner = make_tuner(store, plan, space, resume, status_every)
    log_libraries_to(store.log_file(plan.study))
    with interrupts.tune_running():
        tuner.fit()
    state = saved_state(store.ray_dir / plan.study, plan.trials)
    if state is None or not state.complete:
        reason = ("interrupted" if interrupts.requested()
                  else "Ray Tune stopped before every trial ended")
        raise interrupts.StudyStopped(reason, interrupted=interrupts.requested())
    finish(store, plan)
    return 0


def stopped(store: Store, plan: Plan, reason: str, code: int) -> int:
    """A study that did not complete: where it stands and the command that continues it."""
    if not store.study_file(plan.study).exists():
        log(f"{reason}: study {plan.study} stopped before it was recorded; nothing to resume "
            f"(the same command starts it again)")
        return code
    try:
        state = saved_state(store.ray_dir / plan.study, plan.trials)
        where = state.describe() if state is not None else "no trial started yet"
    except ConfigError as e:
        log(f"{reason}; {e}")
        return code
    log(f"\n{reason}: study {plan.study} stopped with {where}; continue it with:\n"
        f"  python -m study.tune --dataset {plan.dataset} --study-name {plan.study} --resume"
        f"{store.flag}")
    return code


def parent_run(store: Store, plan: Plan, space: SearchSpace) -> str:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    tags = {records.STUDY: plan.study, records.KIND: "study", records.STUDY_KIND: plan.kind}
    if plan.grid:
        tags[records.GRID] = plan.grid
    run = client.create_run(plan.experiment_id, run_name=plan.study, tags=tags)
    params = {k: v for k, v in plan.__dict__.items() if k not in ("parent_run_id", "created")}
    params["git_commit"] = git_commit()
    params["objectives"] = ", ".join(f"{m} ({mode})" for m, mode in plan.objectives)
    if plan.grid:
        params["grid_values"] = str(space.grids[plan.grid])
    else:
        params["search"] = ", ".join(space.search)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id
