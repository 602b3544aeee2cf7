"""``python -m study.tune``: a hyperparameter study of subsampled decoupled SimCLR.

Ray Tune runs the trials (whole or fractional GPUs), Optuna's seeded TPE proposes T, tau, K,
... (persisted in ``mlruns/optuna.db``), ASHA stops bad trials early on the per-epoch validation
kNN accuracy, and MLflow keeps one parent run per study and one nested run per trial. An
interrupted study continues with ``--resume``; every finished trial and epoch is kept.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from study import records
from study._cli import log, parser, run
from study.export import points as export_points
from study.records import TRIAL_ID, read_runs, study_filter
from study.space import BUDGETS, SearchSpace, load_space, resolve_space, space_path
from study.state import saved_state
from study.store import Store, git_commit
from trainables.data import SPECS, prepare_data
from trainables.errors import ConfigError, DataError
from trainables.tune_trainable import OBJECTIVE, TrialSetup, run_trial

FAIL_ONCE_ENV = "SLS_TEST_FAIL_ONCE_AT_EPOCH"  # test-only switch: each trial raises once there


def parse_args(argv: list[str] | None):
    p = parser("python -m study.tune", __doc__)
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(SPECS)}")
    p.add_argument("--budget", choices=BUDGETS, default=None,
                   help="default: short when a GPU is visible, else smoke")
    p.add_argument("--trials", type=int, default=None, help="default: the budget's")
    p.add_argument("--epochs", type=int, default=None, help="default: the budget's")
    p.add_argument("--concurrency", type=int, default=None, help="default: the budget's")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="e.g. 0.25 to pack four trials on a GPU (default: share the GPUs "
                        "among concurrent trials, 0 without GPUs)")
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help="default: the cluster's CPUs shared among concurrent trials")
    p.add_argument("--space", default=None,
                   help="a search-space YAML of your own, or a shipped one by name "
                        "(e.g. fmnist-pareto: accuracy against parallel cost)")
    p.add_argument("--study-name", default=None, help="default: <dataset>-<budget>-<time>")
    p.add_argument("--resume", action="store_true",
                   help="continue the named study (default: the latest of --dataset)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (every node must see the same --store)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or mlruns/mlflow.db)")
    p.add_argument("--store", default="mlruns", help="folder of the local records")
    p.add_argument("--status-every", type=float, default=60.0, metavar="SECONDS",
                   help="print a study line (done, running, best, time left) this often")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial")
    p.add_argument("--grid", default=None,
                   help="run a grid of the space's YAML (table1, ablation, tsweep, ...): every "
                        "cell x seed trained to its end, no search, no early stopping")
    p.add_argument("--config", type=Path, default=None,
                   help="a study.export YAML: re-run its chosen points (no search)")
    p.add_argument("--keep-weights", type=keep_weights_arg, default=None, metavar="N|all",
                   help="finished trials whose encoder weights stay in MLflow, best first by "
                        "validation accuracy (default: the space's keep_weights, 3)")
    p.add_argument("--seeds", type=int, default=None,
                   help="with --grid or --config: seeds per cell, from --seed on "
                        "(default: the budget's, 3 unless it says otherwise)")
    return p.parse_args(argv)


def keep_weights_arg(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1 or all")


@dataclass
class Plan:
    """A study's settings, saved at its start so that ``--resume`` repeats them exactly."""

    study: str
    dataset: str
    space_file: str
    budget: str
    trials: int
    epochs: int
    concurrency: int
    gpus_per_trial: float
    cpus_per_trial: float
    data_dir: str
    seed: int
    parent_run_id: str = ""
    experiment_id: str = ""
    created: float = 0.0
    config_file: str = ""  # re-run the points of a study.export file over ``seeds`` seeds
    seeds: int = 1
    grid: str = ""  # run the cells of this grid of the space over ``seeds`` seeds
    keep_weights: int | str = 3  # finished trials whose encoder stays in MLflow, or "all"
    objectives: list = field(default_factory=lambda: [["knn_val_acc", "max"]])  # [metric, mode]
    completed: float = 0.0  # when the end-of-study work was done; 0 while it is not


def main(argv: list[str] | None = None) -> int:
    """0: the study is complete; 130: stopped (Ctrl-C) and resumable; 1: stopped by a fault
    (one line says which), resumable once it is fixed; 2: bad input."""
    from study import guard, stop

    args = parse_args(argv)
    store = Store.at(args.store, args.tracking_uri)
    guard.quiet_http_retries()
    with stop.handling_ctrl_c():
        # Everything that can be checked without Ray is checked before it starts.
        if args.resume:
            plan = Plan(**store.load_study(args.study_name or store.latest_study(args.dataset)))
            if plan.completed:
                log(f"study {plan.study} is complete (ended {time.ctime(plan.completed)}); "
                    f"nothing to resume")
                return 0
        else:
            plan = _new_plan(store, args)
        try:
            return _study(store, plan, args)
        except KeyboardInterrupt:
            return _stopped(store, plan, "interrupted", code=130)
        except stop.StudyStopped as e:
            return _stopped(store, plan, e.reason, code=130 if e.interrupted else 1)
        except (ConfigError, DataError):
            raise  # bad input: one line from study._cli.run
        except Exception as e:  # Ray Tune wraps what a callback raised in its own errors
            stopped = stop.stopped_by(e, store.root) or guard.unreachable(e, store.tracking_uri)
            if stopped is None:
                raise
            return _stopped(store, plan, stopped.reason, code=130 if stopped.interrupted else 1)


def _study(store: Store, plan: Plan, args) -> int:
    space = load_space(plan.space_file)
    if args.resume:
        state = saved_state(store.ray_dir / plan.study, plan.trials)
        if state is not None and state.complete:
            # Every trial ended; the driver stopped during the end-of-study work.
            log(f"study {plan.study}: {state.describe()}; finishing its end-of-study work")
            _finish(store, plan)
            return 0
    # The driver fetches the data once, before any trial: trials only read (no download races).
    prepare_data(plan.dataset, plan.data_dir)
    from study.progress import log_libraries_to, stderr_to

    log_libraries_to(store.log_file(plan.study))
    with stderr_to(store.log_file(plan.study)):
        started_ray = _init_ray(args.address)
    try:
        gpus = plan.gpus_per_trial if args.resume else args.gpus_per_trial
        cpus = plan.cpus_per_trial if args.resume else args.cpus_per_trial
        plan.gpus_per_trial, plan.cpus_per_trial = _resources(gpus, cpus, plan.concurrency)
        return _run_study(store, plan, space, resume=args.resume, status_every=args.status_every)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _stopped(store: Store, plan: Plan, reason: str, code: int) -> int:
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
        + (f" --store {store.root}" if store.root != Path("mlruns").resolve() else ""))
    return code


def _new_plan(store: Store, args) -> Plan:
    import torch

    space = load_space(resolve_space(args.space) if args.space else space_path(args.dataset))
    if space.dataset != args.dataset:
        raise ConfigError(f"{space.source}: dataset {space.dataset!r} does not match "
                          f"--dataset {args.dataset}")
    budget_name = args.budget or ("short" if torch.cuda.is_available() else "smoke")
    budget = space.budget(budget_name)
    for flag in ("trials", "epochs", "concurrency"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} {value} must be >= 1")
    for flag in ("gpus_per_trial", "cpus_per_trial"):
        value = getattr(args, flag)
        if value is not None and (value < 0 or (flag == "cpus_per_trial" and value == 0)):
            raise ConfigError(f"--{flag.replace('_', '-')} {value} must be "
                              f"{'> 0' if flag == 'cpus_per_trial' else '>= 0'}")
    trials, epochs = args.trials or budget.trials, args.epochs or budget.epochs
    seeds = args.seeds if args.seeds is not None else budget.seeds
    if args.grid is not None and args.config is not None:
        raise ConfigError("--grid and --config are two kinds of study; give one")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be >= 1")
    if args.config is not None:
        # Every exported point over every seed, each for its own epochs unless --epochs.
        trials, epochs = len(export_points(args.config)) * seeds, args.epochs or 0
    elif args.grid is not None:
        trials = len(space.grid(args.grid)) * seeds  # every cell over every seed
    elif args.seeds is not None:
        raise ConfigError("--seeds goes with --grid or --config (a search samples its points)")
    kind = ("rerun" if args.config is not None
            else f"{args.grid}-{budget_name}" if args.grid is not None else budget_name)
    study = args.study_name or f"{args.dataset}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if store.study_file(study).exists():
        raise ConfigError(f"study {study!r} exists in {store.root}; add --resume to continue it "
                          f"or choose another --study-name")
    return Plan(
        study=study, dataset=args.dataset, space_file=str(Path(space.source).resolve()),
        budget=budget_name, trials=trials, epochs=epochs,
        concurrency=args.concurrency or budget.concurrency, gpus_per_trial=0.0,
        cpus_per_trial=0.0, data_dir=str(Path(args.data_dir).expanduser().resolve()),
        seed=args.seed, created=time.time(),
        config_file=str(args.config.resolve()) if args.config is not None else "",
        seeds=seeds if args.config is not None or args.grid is not None else 1,
        grid=args.grid or "",
        keep_weights=args.keep_weights or space.keep_weights,
        objectives=[[o.metric, o.mode] for o in space.objectives],
    )


def _init_ray(address: str | None) -> bool:
    """Join ``address`` or start a small local Ray; reuse a session already started."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        use_token_if_present()
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: {' '.join(str(e).split())}; "
                              f"{CLUSTER_HELP}") from None
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=200 * 1024**2)
    return True


CLUSTER_HELP = (
    "start a head with `ray start --head --port PORT` and join it with --address HOST:PORT "
    "(or auto on the head's machine), with the head's token in ~/.ray/auth_token or "
    "RAY_AUTH_TOKEN"
)


def use_token_if_present() -> None:
    """Ray 2.60 turns token authentication on by default, but a driver given an explicit
    address only sends the token under ``RAY_AUTH_MODE=token``; with ``auto`` it looks for the
    token by itself. Without it every ``HOST:PORT`` join fails with "Failed to connect to Ray
    cluster". Where a token is at hand and the mode is unset, do what ``auto`` does (Ray's own
    function: setting the variable alone is too late once Ray has read its config)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray: it may read the variable itself
        if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds when nothing answers at a Ray address: ``ray.init`` would retry for
    minutes, then raise a traceback. ``auto`` is left to Ray (it finds a local head's files)."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: nothing answers there "
                          f"({e.strerror or type(e).__name__}); {CLUSTER_HELP}") from None


def _resources(gpus: float | None, cpus: float | None, concurrency: int) -> tuple[float, float]:
    """Per-trial resources, checked against the cluster before any trial can wait forever."""
    import ray

    total = ray.cluster_resources()
    n_gpus, n_cpus = total.get("GPU", 0.0), total.get("CPU", 1.0)
    if gpus is None:
        # As many trials on each GPU as concurrency needs: 2 GPUs, 3 at once -> 1/2 each.
        gpus = 1.0 / math.ceil(concurrency / n_gpus) if n_gpus else 0.0
    if cpus is None:
        cpus = max(0.5, min(4.0, n_cpus / concurrency))
    if gpus > 0 and n_gpus < gpus:
        raise ConfigError(
            f"--gpus-per-trial {gpus} asked, but the Ray cluster has {n_gpus:g} GPUs; "
            f"use --gpus-per-trial 0 or a cluster with GPUs"
        )
    if cpus > n_cpus:
        raise ConfigError(f"--cpus-per-trial {cpus} exceeds the cluster's {n_cpus:g} CPUs")
    return gpus, cpus


def _run_study(store: Store, plan: Plan, space: SearchSpace, resume: bool,
               status_every: float = 60.0) -> int:
    from ray import tune

    from study import stop

    log(f"study {plan.study}: {plan.dataset}, budget {plan.budget} ({plan.trials} trials x "
        f"{plan.epochs} epochs, {plan.concurrency} at once, {plan.gpus_per_trial:g} GPU + "
        f"{plan.cpus_per_trial:g} CPU each), space {plan.space_file}")
    if plan.grid:
        log(f"grid {plan.grid}: {len(space.grid(plan.grid))} cells x {plan.seeds} seeds "
            f"({plan.seed}..{plan.seed + plan.seeds - 1}), {space.grids[plan.grid]}")
    log(f"MLflow: {store.tracking_uri}   Optuna: {store.optuna_url}")
    log(f"Ray's, MLflow's and Optuna's own messages: {store.log_file(plan.study)}")
    if not resume:
        with stop.deferred():  # the parent run and the study's record: both or neither
            plan.experiment_id = store.experiment_id(plan.dataset)
            plan.parent_run_id = _parent_run(store, plan, space)
            store.save_study(plan.study, plan.__dict__)
    setup = _trial_setup(store, plan, space)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup.to_dict()),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial},
    )
    path = store.ray_dir / plan.study
    if resume and saved_state(path, plan.trials) is not None:
        log(f"resuming {plan.study} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        if resume:  # stopped before Ray saved any state: nothing Ray knows of to continue
            log(f"study {plan.study} stopped before its first trial was saved; starting its "
                f"trials")
            _forget_unsaved_search(store, plan)
        if plan.config_file or plan.grid:
            tuner = _rerun_tuner(store, plan, space, trainable, setup, status_every)
        else:
            tuner = _new_tuner(store, plan, space, trainable, setup, status_every)
    from study.progress import log_libraries_to

    log_libraries_to(store.log_file(plan.study))  # again: Ray set its loggers up once started
    with stop.tune_running():
        tuner.fit()
    state = saved_state(path, plan.trials)
    if state is None or not state.complete:
        reason = "interrupted" if stop.requested() else "Ray Tune stopped"
        raise stop.StudyStopped(reason, interrupted=stop.requested())
    _finish(store, plan)
    return 0


def _finish(store: Store, plan: Plan) -> None:
    """The end-of-study work, once, on the run that completes the study: close what a killed
    driver left open, the summary, the best encoder's registration, the parent run FINISHED,
    then the record says ``completed``. A driver stopped in the middle does it again on
    ``--resume``; each step is safe to repeat."""
    from study.summary import print_summary

    close_leftovers(store, plan)
    print_summary(store, plan.study, plan.dataset, plan.parent_run_id, True,
                  objectives=plan.objectives)
    plan.completed = time.time()
    store.save_study(plan.study, plan.__dict__)


def _forget_unsaved_search(store: Store, plan: Plan) -> None:
    """The Optuna trials of a study that Ray never saved: no Ray trial will continue them, and
    a fresh searcher would queue the points to evaluate a second time."""
    if plan.grid or plan.config_file:
        return
    import optuna

    try:
        optuna.delete_study(study_name=f"{plan.dataset}/{plan.study}",
                            storage=optuna.storages.RDBStorage(store.optuna_url))
    except KeyError:
        pass


LOST = "the driver was killed before Ray Tune saved this trial's state; it was not resumed"


def close_leftovers(store: Store, plan: Plan) -> None:
    """Close what a killed driver (SIGKILL, power loss) left open, once every trial has ended.

    A driver killed between creating a trial's run (or Optuna trial) and Ray's next save of the
    experiment state leaves that run RUNNING: the resumed study does not know the trial and
    samples another in its place. Every tracked trial is closed by the tracking callback, so a
    trial run still RUNNING here is such a leftover: it ends KILLED, tagged ``lost``. Optuna's
    RUNNING trials end FAIL, so that the sampler and the report never wait on them.
    """
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    open_runs = read_runs(store, plan.experiment_id,
                          study_filter(plan.study, "attributes.status = 'RUNNING'"))
    lost = [r for r in open_runs if TRIAL_ID in r.data.tags]
    for r in lost:
        client.set_tag(r.info.run_id, records.LOST, LOST)
        client.set_terminated(r.info.run_id, "KILLED")
    failed = 0
    if not (plan.grid or plan.config_file):
        storage = optuna.storages.RDBStorage(store.optuna_url)
        try:
            study = optuna.load_study(study_name=f"{plan.dataset}/{plan.study}", storage=storage)
        except KeyError:
            study = None
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) \
            if study is not None else []
        for t in running:
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        failed = len(running)
    if lost or failed:
        log(f"closed what a killed driver left open: {len(lost)} MLflow run(s) (now KILLED, "
            f"tag lost), {failed} Optuna trial(s) (now FAIL)")


def _parent_run(store: Store, plan: Plan, space: SearchSpace) -> str:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    kind = "grid" if plan.grid else "rerun" if plan.config_file else "search"
    tags = {records.STUDY: plan.study, "kind": "study", "study_kind": kind}
    if plan.grid:
        tags["grid"] = plan.grid
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


def _trial_setup(store: Store, plan: Plan, space: SearchSpace) -> TrialSetup:
    budget = space.budget(plan.budget)
    t = space.train
    base = dict(
        dataset=plan.dataset, arch=space.model.arch, width=budget.width or space.model.width,
        K=t.K, threshold=t.threshold, subsample=t.subsample, tau=t.tau, lr=t.lr,
        weight_decay=t.weight_decay, batch_size=t.batch_size, epochs=plan.epochs,
        subset=budget.subset, data_dir=plan.data_dir, seed=plan.seed,
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


def _new_tuner(store: Store, plan: Plan, space: SearchSpace, trainable, setup: TrialSetup,
               status_every: float):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from study.progress import StudySearch

    # One objective: Optuna's value is it. Several: a multi-objective study (TPE handles both)
    # whose trials report every objective in each result; ASHA still stops on the accuracy.
    metrics = [m for m, _ in plan.objectives]
    modes = [m for _, m in plan.objectives]
    searcher = StudySearch(
        space=optuna_space(space),
        metric=metrics[0] if len(metrics) == 1 else metrics,
        mode=modes[0] if len(modes) == 1 else modes,
        points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
        sampler=optuna.samplers.TPESampler(seed=plan.seed),
        study_name=f"{plan.dataset}/{plan.study}",
        storage=optuna.storages.RDBStorage(store.optuna_url),
    )
    scheduler = ASHAScheduler(
        time_attr="epoch", metric=OBJECTIVE, mode="max", max_t=plan.epochs,
        grace_period=min(space.budget(plan.budget).grace_period, plan.epochs),
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency),
            scheduler=scheduler,
            num_samples=plan.trials,
        ),
        run_config=_run_config(store, plan, setup, status_every),
    )


def _run_config(store: Store, plan: Plan, setup: TrialSetup, status_every: float):
    """Where Tune keeps the study, one checkpoint a trial (the latest: enough to resume; at
    K = 16 on ResNet-50 each holds about 2.3 GB), two retries of a crashed trial, and the
    callbacks that print progress and track every trial in MLflow."""
    from ray import tune

    from study.guard import DiskFloor
    from study.progress import Progress
    from study.tracking import MlflowTracking

    tracking = MlflowTracking(
        store.tracking_uri, plan.experiment_id, plan.parent_run_id, plan.study, setup,
        params={"budget": plan.budget, "study": plan.study, "git_commit": git_commit()},
        keep_weights=plan.keep_weights,
    )
    return tune.RunConfig(
        name=plan.study,
        storage_path=str(store.ray_dir),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=2),
        callbacks=[Progress(plan.epochs, plan.trials, plan.concurrency, status_every, plan.study,
                            disk=DiskFloor(str(store.root))),
                   tracking],
        verbose=0,  # our console (study.progress) instead of Ray's result tables
    )


def _rerun_tuner(store: Store, plan: Plan, space: SearchSpace, trainable, setup: TrialSetup,
                 status_every: float):
    """Every cell of a grid, or every point of an export file, with ``plan.seeds`` seeds, each
    trained to its end (no searcher, no scheduler)."""
    from ray import tune

    if plan.grid:
        points = space.grid(plan.grid)  # overrides of the study's base (the space's train:)
    else:
        points = []
        for point in export_points(plan.config_file):
            point = {k: v for k, v in point.items() if k not in ("data_dir", "seed")}
            if plan.epochs:
                point["epochs"] = plan.epochs
            points.append(point)
    seeds = list(range(plan.seed, plan.seed + plan.seeds))
    return tune.Tuner(
        trainable,
        param_space={"point": tune.grid_search(points), "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=plan.concurrency),
        run_config=_run_config(store, plan, setup, status_every),
    )


def optuna_space(space: SearchSpace) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for name, d in space.search.items():
        if d.type == "categorical":
            out[name] = CategoricalDistribution(d.choices)
        elif d.type == "int":
            out[name] = IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
        else:
            out[name] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    return out

if __name__ == "__main__":
    run(main)
