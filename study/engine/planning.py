"""A new study's plan, from ``python -m study.tune``'s flags, every value checked before
anything starts (``new_plan``); the flags themselves (``study_flags``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from study.engine.console import parser
from study.records.exported import points as export_points
from study.records.plan import Plan
from study.records.store import Store
from study.spaces.loading import load_space, resolve_space, space_path
from study.spaces.strata import check_only_K, label, parse_K, shares, strata_of
from study.spaces.types import BUDGETS, SearchSpace
from trainables.errors import ConfigError
from trainables.specs import SPECS


def new_plan(store: Store, args) -> Plan:
    space, default_budget = _space(store, args)
    budget_name = args.budget or default_budget
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
    compare = getattr(args, "compare", None)
    kinds = [f for f, v in (("--grid", args.grid), ("--config", args.config),
                            ("--compare", compare)) if v is not None]
    if len(kinds) > 1:
        raise ConfigError(f"{' and '.join(kinds)} are different kinds of study; give one")
    trials, epochs = args.trials or budget.trials, args.epochs or budget.epochs
    seeds = args.seeds if args.seeds is not None else budget.seeds
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be >= 1")
    only_K, strata, points, arms = [], [], [], []
    seed = args.seed if args.seed is not None else 0
    if args.config is not None:
        # Every exported point over every seed, each for its own epochs unless --epochs.
        trials, epochs = len(export_points(args.config)) * seeds, args.epochs or 0
    elif args.grid is not None:
        trials = len(space.grid(args.grid)) * seeds  # every cell over every seed
    elif compare is not None:
        from study.records.comparison import compare_points

        points, arms = compare_points(store, args.dataset, compare, space)
        trials, epochs = len(points) * seeds, args.epochs or 0
        seed = _compare_seed(store, compare, args.seed, seeds)
    elif args.seeds is not None:
        raise ConfigError("--seeds goes with --grid, --config or --compare (a search samples "
                          "its points)")
    else:
        only_K, strata, trials = _strata(args, space, trials)
    if args.K and kinds:
        raise ConfigError(f"--K restricts a search to splits; the points of {kinds[0]} name "
                          f"their own K")
    if getattr(args, "trials_per_K", None) is not None and kinds:
        raise ConfigError(f"--trials-per-K shares a search's trials among splits; {kinds[0]} "
                          f"runs each of its points with --seeds seeds")
    kind = ("rerun" if args.config is not None
            else f"{args.grid}-{budget_name}" if args.grid is not None else budget_name)
    study = args.study_name or (f"{compare}-vs-paper" if compare is not None else
                                f"{args.dataset}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if store.study_file(study).exists():
        raise ConfigError(f"study {study!r} exists in {store.root}; add --resume to continue it "
                          f"or choose another --study-name")
    return Plan(
        study=study, dataset=args.dataset, space_file=str(Path(space.source).resolve()),
        budget=budget_name, trials=trials, epochs=epochs,
        concurrency=args.concurrency or budget.concurrency, gpus_per_trial=0.0,
        cpus_per_trial=0.0, data_dir=_data_dir(store, args),
        seed=seed, created=time.time(),
        config_file=str(args.config.resolve()) if args.config is not None else "",
        seeds=seeds if kinds else 1,
        grid=args.grid or "",
        keep_weights=args.keep_weights or space.keep_weights,
        objectives=[[o.metric, o.mode] for o in space.objectives],
        compare=compare or "", points=points, arms=arms,
        K=only_K, strata=strata, shares=shares(trials, len(strata)) if strata else [],
    )


def _compare_seed(store: Store, compare: str, seed: int | None, seeds: int) -> int:
    """The first seed of a ``--compare``: after the search's, whose runs won the search on
    their own noise; re-running that seed would hand the searched arm its winning draw."""
    searched = Plan.load(store, compare).seed
    if seed is None:
        return searched + 1
    if seed <= searched < seed + seeds:
        raise ConfigError(f"--seed {seed} with --seeds {seeds} re-runs seed {searched}, the "
                          f"search's own: its best trial won on that seed's draw, which would "
                          f"favour the searched arm; start at --seed {searched + 1}")
    return seed


def _data_dir(store: Store, args) -> str:
    """``--data-dir``, else the searched study's (``--compare``: the same data), else ``data``."""
    if args.data_dir is None and getattr(args, "compare", None):
        return Plan.load(store, args.compare).data_dir
    return str(Path(args.data_dir or "data").expanduser().resolve())


def _space(store: Store, args) -> tuple[SearchSpace, str]:
    """The study's space and default budget: ``--space`` or the data set's, or with
    ``--compare`` the searched study's."""
    compare = getattr(args, "compare", None)
    if compare is not None:
        searched = Plan.load(store, compare)
        if args.space:
            raise ConfigError(f"--compare {compare} re-runs in that study's space "
                              f"({searched.space_file}); leave out --space")
        if searched.dataset != args.dataset:
            raise ConfigError(f"--compare {compare} is a study of {searched.dataset}, not "
                              f"--dataset {args.dataset}")
        space, default_budget = load_space(searched.space_file), searched.budget
    else:
        import torch

        space = load_space(resolve_space(args.space) if args.space else space_path(args.dataset))
        default_budget = "short" if torch.cuda.is_available() else "smoke"
    if space.dataset != args.dataset:
        raise ConfigError(f"{space.source}: dataset {space.dataset!r} does not match "
                          f"--dataset {args.dataset}")
    return space, default_budget


def _strata(args, space: SearchSpace, trials: int) -> tuple[list[int], list[dict], int]:
    """A search's splits (``--K``), its strata and its trials (``--trials-per-K``, at least one
    per split)."""
    only_K = parse_K(args.K) if args.K else []
    if only_K:
        check_only_K(only_K, space.search, space.source)
    strata = strata_of(space.search, space.objectives, only_K)
    per_K = getattr(args, "trials_per_K", None)
    if per_K is not None:
        if per_K < 1:
            raise ConfigError(f"--trials-per-K {per_K} must be >= 1")
        if not strata:
            raise ConfigError("--trials-per-K goes with a search over splits (a space that "
                              "searches K with one objective)")
        if args.trials is not None:
            raise ConfigError("--trials and --trials-per-K both set the number of trials; "
                              "give one")
        trials = per_K * len(strata)
    elif strata and args.trials is None:
        trials = max(trials, len(strata))  # the budget's trials, at least one per split
    if strata and trials < len(strata):
        raise ConfigError(f"--trials {trials} leaves a split without a trial: a search gives "
                          f"each of its {len(strata)} splits ({', '.join(map(label, strata))}) "
                          f"its share; give at least {len(strata)}, or choose splits with --K")
    return only_K, strata, trials


def study_flags(argv: list[str] | None, doc: str = "") -> argparse.Namespace:
    """``python -m study.tune``'s flags: what a plan is made of (``new_plan``)."""
    p = parser("python -m study.tune", doc)
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(SPECS)}")
    p.add_argument("--budget", choices=BUDGETS, default=None,
                   help="default: short when a GPU is visible, else smoke")
    p.add_argument("--trials", type=int, default=None,
                   help="default: the budget's; a search shares them equally among its splits")
    p.add_argument("--trials-per-K", dest="trials_per_K", type=int, default=None, metavar="N",
                   help="a search's trials per split (instead of --trials)")
    p.add_argument("--K", default=None, metavar="K[,K...]",
                   help="search only these splits, e.g. 8 or 4,8 (default: every K of the space)")
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
    p.add_argument("--data-dir", default=None,
                   help="default: data (with --compare: the searched study's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the sampler and every trial (default 0; with --compare, the "
                        "searched study's seed + 1: fresh seeds, not the runs that won)")
    p.add_argument("--grid", default=None,
                   help="run a grid of the space's YAML (table1, ablation, tsweep, ...): every "
                        "cell x seed trained to its end, no search, no early stopping")
    p.add_argument("--config", type=Path, default=None,
                   help="a study.export YAML: re-run its chosen points (no search)")
    p.add_argument("--compare", default=None, metavar="STUDY",
                   help="after a search: re-run its best configuration of each K and the "
                        "paper's point at that K with --seeds seeds each, and compare them")
    p.add_argument("--keep-weights", type=keep_weights_arg, default=None, metavar="N|all",
                   help="finished trials whose encoder weights stay in MLflow, best first by "
                        "validation accuracy (default: the space's keep_weights, 3)")
    p.add_argument("--seeds", type=int, default=None,
                   help="with --grid, --config or --compare: seeds per point, from --seed on "
                        "(default: the budget's, 3 unless it says otherwise)")
    return p.parse_args(argv)


def keep_weights_arg(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1 or all")
