"""How a study's Ray Tune run is put together: the trainable with its resources, Optuna's
searcher (or a grid of points), ASHA, the run config and the callbacks; a new one, or the
saved one restored for ``--resume``."""

from __future__ import annotations

import functools
import os
import shutil

from study.engine.checkpoints import sweep_checkpoints
from study.engine.console import log
from study.engine.provenance import git_commit
from study.engine.resume.checkpoint_repair import continued_checkpoints, repair_checkpoints
from study.engine.resume.lost import close_lost_runs
from study.engine.resume.rungs import rebuild_rungs
from study.engine.resume.saves import SavedGenerations, generations_dir, keep_in_generation
from study.records.exported import points as export_points
from study.records.plan import Plan
from study.records.ray_state import saved_state
from study.records.store import Store, write_ahead_log
from study.spaces.strata import (
    bracket_keys,
    optuna_study_name,
    optuna_study_names,
    stratum_points,
)
from study.spaces.types import SearchSpace
from trainables.tune_trainable import OBJECTIVE, TrialSetup, run_trial

FAIL_ONCE_ENV = "SLS_TEST_FAIL_ONCE_AT_EPOCH"  # test-only switch: each trial raises once there


def make_tuner(store: Store, plan: Plan, space: SearchSpace, resume: bool,
               status_every: float, trial_fn=run_trial, callbacks: bool = True):
    """The saved run restored (``--resume``), else a new one. ``trial_fn`` and ``callbacks``
    (the console and MLflow tracking) are for the bookkeeping benchmark
    (``study.benchmarks.bookkeeping``), which replaces the training and measures what the callbacks
    cost."""
    from ray import tune

    # The kNN monitor reports on its epochs only (monitor_every), and a linear_val_acc objective
    # at the last: ASHA and the searcher pass over a result without their metric, which Tune's
    # check of every result would otherwise refuse.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"

    setup = trial_setup(store, plan, space)
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, setup=setup.to_dict()),
        functools.partial(trial_resources, plan.cpus_per_trial, plan.gpus_per_trial,
                          setup.base.get("stages", 1)),
    )
    path = store.ray_dir / plan.study
    state = saved_state(path, plan.trials) if resume else None
    if state is not None:
        log(f"resuming {plan.study} from {path}")
        repaired = repair_checkpoints(path)
        if repaired:
            log(f"{', '.join(repaired)}: Ray's saved state was older than the newest checkpoint "
                f"on disk; continuing from it")
            keep_in_generation(path, generations_dir(store, plan.study))
        freed = sweep_checkpoints(path, continued_checkpoints(path))
        if freed:
            log(f"checkpoints: {freed / 1e6:.1f} MB that no trial continues from deleted (left "
                f"by the driver's stop)")
        lost = close_lost_runs(store, plan, keep={t.trial_id for t in state.trials})
        if lost:
            log(f"{lost} trial run(s) closed as lost (KILLED, tag lost): the driver was killed "
                f"before Ray saved their trials, which the search makes again")
        # A trial in ERROR spent its retries: it has ended (study.records.ray_state) and stays so.
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=False)
        if plan.kind == "search":
            _brackets_as_now(tuner, plan, space)
        rebuild_rungs(tuner, store, plan)
        return tuner
    if resume:  # stopped before Ray saved any state: nothing Ray knows of to continue
        log(f"study {plan.study} stopped before its first trial was saved; starting its trials")
        forget_unsaved_search(store, plan)
    # A study of the same name the user deleted may have left its generations: never this one's.
    shutil.rmtree(generations_dir(store, plan.study), ignore_errors=True)
    run_config = _run_config(store, plan, setup, status_every, callbacks)
    if plan.kind != "search":
        return _rerun_tuner(plan, space, trainable, run_config)
    return _new_tuner(store, plan, space, trainable, run_config)


def forget_unsaved_search(store: Store, plan: Plan) -> None:
    """The Optuna trials of a study that Ray never saved: no Ray trial will continue them, and
    a fresh searcher would queue the points to evaluate a second time."""
    if plan.kind != "search":
        return
    import optuna

    storage = optuna.storages.RDBStorage(store.optuna_url)
    for name in optuna_study_names(plan):
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


def trial_resources(cpus: float, gpus: float, stages: int, config: dict):
    """A trial's share for each of its pipeline stages (``stages`` in its configuration, or the
    space's), in one bundle: the stages are processes of the trial, on its node, and see the
    GPUs Ray gives the trial."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    n = int({**config.get("point", {}), **config}.get("stages", stages))  # grids: in "point"
    return resource_dict_to_pg_factory({"cpu": cpus * n, "gpu": gpus * n})


def trial_setup(store: Store, plan: Plan, space: SearchSpace) -> TrialSetup:
    budget = space.budget(plan.budget)
    t = space.train
    base = dict(
        dataset=plan.dataset, arch=space.model.arch, width=budget.width or space.model.width,
        K=t.K, threshold=t.threshold, subsample=t.subsample, tau=t.tau, lr=t.lr,
        weight_decay=t.weight_decay, batch_size=t.batch_size, epochs=plan.epochs,
        stages=t.stages, partition=t.partition,
        subset=budget.subset, data_dir=plan.data_dir, seed=plan.seed,
        monitor_every=budget.monitor_every, monitor_images=budget.monitor_images,
        # A trial with no GPU share trains on the CPU: Ray does not hide the GPUs from it.
        device="auto" if plan.gpus_per_trial else "cpu",
        download=False,  # the driver prepared the data (prepare_data)
    )
    fail_at = os.environ.get(FAIL_ONCE_ENV)
    return TrialSetup(
        base=base,
        linear_epochs=budget.linear_epochs or t.linear_epochs,
        checkpoint_every=budget.checkpoint_every,
        cpus=plan.cpus_per_trial,
        gpu_fraction=plan.gpus_per_trial,
        fail_once_at_epoch=int(fail_at) if fail_at else None,
        fail_marker_dir=str(store.root / "fail_markers" / plan.study) if fail_at else None,
    )


def _new_tuner(store: Store, plan: Plan, space: SearchSpace, trainable, run_config):
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from study.engine.search import StratifiedSearch, StudySearch

    # One objective: Optuna's value is it. Several: a multi-objective study (TPE handles both)
    # whose trials report every objective in each result; ASHA still stops on the accuracy.
    metrics = [m for m, _ in plan.objectives]
    modes = [m for _, m in plan.objectives]
    metric = metrics[0] if len(metrics) == 1 else metrics
    mode = modes[0] if len(modes) == 1 else modes
    storage = optuna.storages.RDBStorage(store.optuna_url)
    write_ahead_log(store.root / "optuna.db")
    distributions = optuna_space(space, plan.K)
    if not plan.strata:
        searcher = StudySearch(
            space=distributions, metric=metric, mode=mode,
            points_to_evaluate=[dict(p) for p in space.points_to_evaluate
                                if not plan.K or p.get("K") in plan.K] or None,
            sampler=_sampler(plan, plan.trials, plan.seed),
            study_name=optuna_study_name(plan.dataset, plan.study), storage=storage,
        )
    else:
        keys = list(plan.strata[0])
        for k in keys:
            distributions.pop(k)
        searchers = []
        for i, (stratum, share) in enumerate(zip(plan.strata, plan.shares)):
            searchers.append(StudySearch(
                space=distributions, metric=metric, mode=mode,
                points_to_evaluate=stratum_points(space.points_to_evaluate, stratum) or None,
                # Each split its own draws: one seed would give every split the same points.
                sampler=_sampler(plan, share, plan.seed + i),
                study_name=optuna_study_name(plan.dataset, plan.study, stratum), storage=storage,
            ))
        searcher = StratifiedSearch(searchers, plan.strata, plan.shares, metric, mode)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency),
            scheduler=search_scheduler(plan, space),
            num_samples=plan.trials,
            reuse_actors=True,  # a trial's process serves the next: no start-up per trial
        ),
        run_config=run_config,
    )


def search_scheduler(plan: Plan, space: SearchSpace):
    """A search's ASHA: one bracket set for every trial, or one per split of a stratified
    search, or one per cost of a front's search (``strata.bracket_keys``: a trial is stopped
    only against trials of the same cost)."""
    from study.engine.scheduler import StratifiedASHA, StudyASHA

    asha = dict(time_attr="epoch", metric=OBJECTIVE, mode="max", max_t=plan.epochs,
                grace_period=min(space.budget(plan.budget).grace_period, plan.epochs))
    keys = bracket_keys(space.search, plan.objectives)
    return StratifiedASHA(keys, **asha) if keys else StudyASHA(**asha)


def _brackets_as_now(tuner, plan: Plan, space: SearchSpace) -> None:
    """A search saved with other brackets than it would have now (a front saved with one
    bracket set for every cost, before its brackets went per cost) continues with today's: its
    rungs are rebuilt from the store into them, with one line."""
    local = getattr(tuner, "_local_tuner", None)  # none through a Ray client (ray://)
    saved = getattr(getattr(local, "_tune_config", None), "scheduler", None)
    wanted = bracket_keys(space.search, plan.objectives)
    if saved is None or not hasattr(saved, "rebuild") or list(saved.keys) == wanted:
        return
    local._tune_config.scheduler = search_scheduler(plan, space)
    log(f"ASHA: brackets per {', '.join(wanted) or 'study'} from now on (the study was saved "
        f"with brackets per {', '.join(saved.keys) or 'study'})")


def _sampler(plan: Plan, trials: int, seed: int):
    """TPE seeded with ``seed``. Its random start-up is at most half of the trials it will see
    (Optuna's 10 would leave a stratum of 6 trials all random), and concurrent trials are told
    apart by the constant liar (a running trial counts as a poor one, so two free slots get
    two points)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, trials // 2)),
                                      constant_liar=plan.concurrency > 1)


def _run_config(store: Store, plan: Plan, setup: TrialSetup, status_every: float,
                callbacks: bool = True):
    """Where Tune keeps the study, one checkpoint a trial (the latest: enough to resume; at
    K = 16 on ResNet-50 each holds about 2.3 GB; ``study.engine.checkpoints`` says why not Ray's
    ``num_to_keep``), two retries of a crashed trial, and the callbacks that print progress
    and track every trial in MLflow (``callbacks``)."""
    from ray import tune

    from study.engine.checkpoints import LatestCheckpointOnly
    from study.engine.faults import DiskFloor
    from study.engine.progress import Progress
    from study.engine.tracking import MlflowTracking

    tracking = MlflowTracking(
        store.tracking_uri, plan.experiment_id, plan.parent_run_id, plan.study, setup,
        params={"budget": plan.budget, "study": plan.study, "git_commit": git_commit()},
        keep_weights=plan.keep_weights,
    )
    return tune.RunConfig(
        name=plan.study,
        storage_path=str(store.ray_dir),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        failure_config=tune.FailureConfig(max_failures=2),
        callbacks=[
            LatestCheckpointOnly(), SavedGenerations(),
            *([Progress(plan.epochs, plan.trials, plan.concurrency, status_every, plan.study,
                        disk=DiskFloor(str(store.root))), tracking] if callbacks else []),
        ],
        verbose=0,  # our console (study.engine.progress) instead of Ray's result tables
    )


def _rerun_tuner(plan: Plan, space: SearchSpace, trainable, run_config):
    """Every cell of a grid, or every point of an export file, with ``plan.seeds`` seeds, each
    trained to its end (no searcher, no scheduler)."""
    from ray import tune

    if plan.grid:
        points = space.grid(plan.grid)  # overrides of the study's base (the space's train:)
    else:
        points = []
        for point in (plan.points or export_points(plan.config_file)):
            point = {k: v for k, v in point.items() if k not in ("data_dir", "seed")}
            if plan.epochs:
                point["epochs"] = plan.epochs
            points.append(point)
    seeds = list(range(plan.seed, plan.seed + plan.seeds))
    return tune.Tuner(
        trainable,
        param_space={"point": tune.grid_search(points), "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=plan.concurrency,
                                    reuse_actors=True),
        run_config=run_config,
    )


def optuna_space(space: SearchSpace, only_K: list[int] | None = None) -> dict:
    """Optuna's distributions of the space's search; ``only_K`` narrows a searched K (``--K``)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for name, d in space.search.items():
        if d.type == "categorical":
            choices = [c for c in d.choices if c in only_K] if name == "K" and only_K else d.choices
            out[name] = CategoricalDistribution(choices)
        elif d.type == "int":
            out[name] = IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
        else:
            out[name] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    return out
