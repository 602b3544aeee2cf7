"""The bookkeeping benchmark (``python -m study.bench --bookkeeping``): everything a study does
but the training.

A benchmark, never a user-facing mode. ``study.benchmarks.fake_trial.fake_trial`` stands in for
``run_trial``, as fast as Ray Tune takes its results. What is timed is then the driver (Ray
Tune, Optuna, ASHA, our console and MLflow tracking), the store and the readers (summary,
export, report, Pareto front, the MLflow UI's runs page).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study.benchmarks.fake_trial import fake_trial
from study.engine.console import log

REPORT_TIMEOUT = 600


SPACE = """
# The bookkeeping benchmark's space (study.benchmarks.bookkeeping): what is searched is real; the
# trials train nothing.
dataset: digits
model: {{arch: {arch}, width: {width}}}
train: {{batch_size: 128, K: {K}, threshold: 0.0, tau: 0.5, linear_epochs: 1}}
search:
  threshold: {{type: float, low: -1.0, high: 0.9}}
  tau: {{type: float, low: 0.1, high: 1.0, log: true}}
  K: {{type: categorical, choices: [{K}]}}
points_to_evaluate:
  - {{threshold: 0.3, tau: 0.5, K: {K}}}
budgets:
  smoke: {{epochs: {epochs}, trials: {trials}, concurrency: {concurrency},
          grace_period: {grace}, checkpoint_every: {checkpoint_every}}}
"""


def space_text(trials: int, epochs: int, K: int, concurrency: int) -> str:
    """ResNet-18 for K up to 8, ResNet-50 (16 residual blocks) for K = 16, narrow (the encoder
    file stays small); ASHA's grace and the checkpoints as our budgets set them: a short study
    (digits ``short``: grace 5 of 30 epochs, a checkpoint every epoch) or a paper-length one
    (``paper``: grace 100 of 1000, a checkpoint every 10)."""
    arch, width = ("resnet18", 0.125) if K <= 8 else ("resnet50", 0.0625)
    paper_length = epochs >= 100
    return SPACE.format(arch=arch, width=width, K=K, epochs=epochs, trials=trials,
                        concurrency=concurrency,
                        grace=max(1, epochs // (10 if paper_length else 6)),
                        checkpoint_every=10 if paper_length else 1)


def run_study(root: Path, tracking_uri: str | None, name: str, trials: int, epochs: int, K: int,
              concurrency: int, callbacks: bool, keep_weights: int | None = None) -> dict:
    """One bookkeeping study on the Ray of this process: its plan as ``study.tune`` makes it,
    its parent run and record, ``Tuner.fit()`` timed, Optuna's suggest times recorded."""
    from study.engine import faults, lifecycle
    from study.engine.planning import new_plan, study_flags
    from study.engine.search import StudySearch
    from study.engine.tuner import make_tuner
    from study.records.ray_state import saved_state
    from study.records.store import Store
    from study.spaces.loading import load_space

    faults.quiet_http_retries()  # as study.tune sets MLflow's client up
    store = Store.at(root, tracking_uri)
    space_file = root / f"{name}.yaml"
    space_file.write_text(space_text(trials, epochs, K, concurrency))
    flags = ["--dataset", "digits", "--space", str(space_file), "--budget", "smoke",
             "--study-name", name]
    if keep_weights is not None:
        flags += ["--keep-weights", str(keep_weights)]
    plan = new_plan(store, study_flags(flags))
    plan.cpus_per_trial = max(0.01, (os.cpu_count() or 1) / concurrency)
    space = load_space(plan.space_file)
    plan.experiment_id = store.experiment_id(plan.dataset)
    plan.parent_run_id = lifecycle.parent_run(store, plan, space)
    plan.save(store)
    suggest_ms: list[float] = []
    original = StudySearch.suggest

    def timed_suggest(self, trial_id):
        start = time.perf_counter()
        try:
            return original(self, trial_id)
        finally:
            suggest_ms.append(1000 * (time.perf_counter() - start))

    tuner = make_tuner(store, plan, space, False, 3600.0, trial_fn=fake_trial,
                       callbacks=callbacks)
    StudySearch.suggest = timed_suggest
    try:
        start = time.perf_counter()
        grid = tuner.fit()
        fit_s = time.perf_counter() - start
    finally:
        StudySearch.suggest = original
    state = saved_state(store.ray_dir / plan.study, plan.trials)
    if state is None or not state.complete:
        raise RuntimeError(f"bookkeeping study {name} did not complete: "
                           f"{state.describe() if state else 'no state'}")
    results = sum(int(r.metrics.get("training_iteration", 0)) for r in grid)
    return {"store": store, "plan": plan, "fit_s": fit_s, "results": results,
            "suggest_ms": suggest_ms}


def bookkeeping(trials: int, epochs: int, K: int, tracking_uri: str | None = None,
                concurrency: int = 4, ui: bool = True, root: Path | None = None,
                copies: int = 1) -> dict:
    """The bookkeeping benchmark's figures (see ``study.bench --bookkeeping``); with
    ``copies`` > 1, the readers' again on the finished store made that many times larger
    (``study.benchmarks.replicate``), under ``copies``."""
    import resource

    import ray

    from study.engine.cluster import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(root or tmp)
        started_ray = init_ray(None)
        try:
            log(f"bookkeeping: {trials} trials x {epochs} epochs, K = {K}, {concurrency} at "
                f"once; first without our callbacks (Ray Tune, Optuna and ASHA alone)")
            # The callbacks' cost: the same study without them, in a store of its own.
            off = run_study(root / "off", None, "off", trials, epochs, K, concurrency, False)
            log(f"  without callbacks: {off['results']} results in {off['fit_s']:.1f} s; now "
                f"with them")
            on = run_study(root / "on", tracking_uri, "on", trials, epochs, K, concurrency, True)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, Linux kB
            log(f"  with callbacks: {on['results']} results in {on['fit_s']:.1f} s")
        finally:
            if started_ray:
                ray.shutdown()
        out = {
            "trials": trials, "epochs": epochs, "K": K, "concurrency": concurrency,
            "tracking": "sqlite" if tracking_uri is None else tracking_uri,
            "results": on["results"], "fit_s": on["fit_s"],
            "results_per_s": on["results"] / on["fit_s"],
            "results_per_s_without_callbacks": off["results"] / off["fit_s"],
            "driver_ms_per_result": 1000 * (on["fit_s"] / on["results"]
                                            - off["fit_s"] / off["results"]),
            "trial_overhead_s": (on["fit_s"] - off["fit_s"] * on["results"] / off["results"])
            / trials,
            "suggest_ms_at_n": statistics.median(on["suggest_ms"][-50:]),
            "suggest_ms_first": statistics.median(on["suggest_ms"][:50]),
            "driver_peak_rss_mb": rss / 1e6,
        }
        store, plan = on["store"], on["plan"]
        out["store_mb"] = _store_mb(store)
        out.update(readers(store, plan))
        if ui:
            from study.benchmarks.ui_speed import runs_page_seconds

            out["ui_runs_page_s"] = runs_page_seconds(store, plan)
        if copies > 1:
            from study.benchmarks.replicate import replicate

            start = time.perf_counter()
            larger = {"trials": replicate(store, plan, copies)}
            log(f"  the store copied to {larger['trials']} trials in "
                f"{time.perf_counter() - start:.0f} s; the readers again")
            larger["store_mb"] = _store_mb(store)
            larger.update(readers(store, plan))
            if ui:
                larger["ui_runs_page_s"] = runs_page_seconds(store, plan)
            out["copies"] = larger
        return out


def _store_mb(store) -> dict:
    files = {"mlflow_db": store.root / "mlflow.db", "optuna_db": store.root / "optuna.db"}
    # With SQLite's write-ahead log, what is not yet checkpointed into the file is beside it.
    out = {k: sum(g.stat().st_size for g in (f, f.with_name(f.name + "-wal")) if g.exists())
           / 1e6 for k, f in files.items() if f.exists()}
    out["artifacts"] = sum(f.stat().st_size for f in store.artifacts.rglob("*")
                           if f.is_file()) / 1e6
    return out


def readers(store, plan) -> dict:
    """The end-of-study work and each reader on the finished store: as work in this process
    (``*_s``) and as the command a user types, start-up included (``*_command_s``)."""
    from study.engine.finish import finish
    from study.records.exported import export
    from study.records.pareto import finished_points, front
    from study.records.trials import read_trials
    from study.report.gather import gather_study
    from study.report.page import build

    out = {}
    start = time.perf_counter()
    finish(store, plan)  # the end-of-study table, registration, the parent FINISHED
    out["summary_s"] = time.perf_counter() - start
    start = time.perf_counter()
    export(store, plan.dataset, plan.study)
    out["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    page, _ = build(store, gather_study(store, plan.study))
    out["report_s"] = time.perf_counter() - start
    out["report_kb"] = len(page) / 1024
    start = time.perf_counter()
    objectives = [("linear_val_acc", "max"), ("max_block_macs", "min")]
    front(finished_points(read_trials(store, plan.dataset, plan.study), objectives), objectives)
    out["pareto_s"] = time.perf_counter() - start
    flags = ["--store", str(store.root), "--study", plan.study]
    if not store.tracking_uri.startswith("sqlite"):
        flags += ["--tracking-uri", store.tracking_uri]
    with tempfile.TemporaryDirectory() as d:
        out["export_command_s"] = _command(["study.export", "--dataset", plan.dataset, *flags,
                                            "--out", f"{d}/best.yaml"])
        out["report_command_s"] = _command(["study.report", *flags, "--out", d])
    log("  readers: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return out


def _command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True, capture_output=True,
                   timeout=REPORT_TIMEOUT)
    return time.perf_counter() - start
