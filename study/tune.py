"""``python -m study.tune``: a hyperparameter study of subsampled decoupled SimCLR.

Ray Tune runs the trials (whole or fractional GPUs), Optuna's seeded TPE proposes T, tau, K,
... (persisted in ``mlruns/optuna.db``), ASHA stops bad trials early on the per-epoch validation
kNN accuracy, and MLflow keeps one parent run per study and one nested run per trial. An
interrupted study continues with ``--resume``; every finished trial and epoch is kept.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from study._cli import log, parser, run
from study.plan import Plan, new_plan
from study.space import BUDGETS
from study.store import Store
from trainables.data import SPECS
from trainables.errors import ConfigError, DataError


def parse_args(argv: list[str] | None):
    p = parser("python -m study.tune", __doc__)
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


def main(argv: list[str] | None = None) -> int:
    """0: the study is complete; 130: stopped (Ctrl-C) and resumable; 1: stopped by a fault
    (one line says which), resumable once it is fixed; 2: bad input."""
    from study import guard, lifecycle, stop

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
            plan = new_plan(store, args)
        try:
            return lifecycle.run(store, plan, args.resume, args.address, args.gpus_per_trial,
                                 args.cpus_per_trial, args.status_every)
        except KeyboardInterrupt:
            return lifecycle.stopped(store, plan, "interrupted", code=130)
        except stop.StudyStopped as e:
            return lifecycle.stopped(store, plan, e.reason, code=130 if e.interrupted else 1)
        except (ConfigError, DataError):
            raise  # bad input: one line from study._cli.run
        except Exception as e:  # Ray Tune wraps what a callback raised in its own errors
            stopped = stop.stopped_by(e, store.root) or guard.unreachable(e, store.tracking_uri)
            if stopped is None:  # anything else: one line here, the traceback in the log file
                stopped = stop.StudyStopped(failure_line(e, store.log_file(plan.study)))
            return lifecycle.stopped(store, plan, stopped.reason,
                                     code=130 if stopped.interrupted else 1)


def failure_line(e: BaseException, log_file: Path) -> str:
    """``failed: <error's first line> (traceback in <log file>)``, the traceback written there."""
    import traceback

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        f.write("".join(traceback.format_exception(e)))
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"failed: {type(e).__name__}: {first} (traceback in {log_file})"


if __name__ == "__main__":
    run(main)
