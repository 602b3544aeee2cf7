"""``python -m study.tune``: a hyperparameter study of subsampled decoupled SimCLR.

Ray Tune runs the trials (whole or fractional GPUs), Optuna's seeded TPE proposes T, tau, K,
... (persisted in ``mlruns/optuna.db``), ASHA stops bad trials early on the per-epoch validation
kNN accuracy, and MLflow keeps one parent run per study and one nested run per trial. An
interrupted study continues with ``--resume``; every finished trial and epoch is kept.
"""

from __future__ import annotations

import time
from pathlib import Path

from study.engine.console import log, run
from study.engine.planning import new_plan, study_flags
from study.records.plan import Plan
from study.records.store import Store
from trainables.errors import ConfigError, DataError


def main(argv: list[str] | None = None) -> int:
    """0: the study is complete; 130: stopped (Ctrl-C) and resumable; 1: stopped by a fault
    (one line says which), resumable once it is fixed; 2: bad input."""
    from study.engine import faults, interrupts

    args = study_flags(argv, __doc__)
    store = Store.at(args.store, args.tracking_uri)
    faults.quiet_http_retries()
    with interrupts.handling_ctrl_c():
        # Everything that can be checked without Ray is checked before it starts.
        if args.resume:
            plan = Plan.load(store, args.study_name or Plan.latest(store, args.dataset))
            if plan.completed:
                log(f"study {plan.study} is complete (ended {time.ctime(plan.completed)}); "
                    f"nothing to resume")
                return 0
        else:
            plan = new_plan(store, args)
        # Ray, torch and MLflow load only once the plan holds: bad input is told in a second.
        from study.engine import lifecycle

        try:
            return lifecycle.run(store, plan, args.resume, args.address, args.gpus_per_trial,
                                 args.cpus_per_trial, args.status_every)
        except KeyboardInterrupt:
            return lifecycle.stopped(store, plan, "interrupted", code=130)
        except interrupts.StudyStopped as e:
            return lifecycle.stopped(store, plan, e.reason, code=130 if e.interrupted else 1)
        except (ConfigError, DataError):
            raise  # bad input: one line from study.engine.console.run
        except Exception as e:  # Ray Tune wraps what a callback raised in its own errors
            stopped = faults.stopped_by(e, store.root) or faults.unreachable(e, store.tracking_uri)
            if stopped is None:  # anything else: one line here, the traceback in the log file
                stopped = interrupts.StudyStopped(failure_line(e, store.log_file(plan.study)))
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
