"""A study's trials as rows read back from MLflow: the end-of-study table, the best model's
registration, and the source of ``study.export``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from study._cli import log
from study.records import (
    BEST_RUN,
    MODEL_URI,
    TrialRecord,
    experiment_of,
    ranked,
    read_runs,
    read_trials,
    study_filter,
)
from study.store import Store, runs_url
from trainables.errors import ConfigError


def study_rows(store: Store, dataset: str, study: str) -> list[TrialRecord]:
    """Every trial run of ``study`` (one per trial), best first by validation accuracy."""
    if experiment_of(store, dataset) is None:
        raise ConfigError(f"no MLflow experiment {dataset!r} at {store.tracking_uri}")
    return ranked(read_trials(store, dataset, study))


def print_summary(store: Store, study: str, dataset: str, parent_run_id: str,
                  complete: bool, top: int = 10, objectives: list | None = None) -> None:
    rows = study_rows(store, dataset, study)
    on_front: set[str] = set()
    if objectives and len(objectives) > 1:
        from study.pareto import finished_points, front

        members = front(finished_points(rows, objectives), objectives)
        on_front = {p.run_id for p in members}
        # Every front member is shown, then the best of the rest.
        rows.sort(key=lambda r: r.run_id not in on_front)
        top = max(top, len(on_front))
        log(f"\nPareto front over {', '.join(m for m, _ in objectives)}: {len(on_front)} of "
            f"the finished trials (marked 'front')")
    log(f"\n{study}: {len(rows)} trial run(s), best first by validation accuracy "
        f"(test accuracy is reported, never used to choose)")
    log(f"{'trial':<14}{'T':>7}{'tau':>7}{'K':>4}  {'knn val':>8}{'lin val':>9}{'lin test':>9}  "
        f"state")
    for row in rows[:top]:
        state = ("diverged" if row.diverged else "stopped early" if row.early_stopped
                 else row.status.lower())
        if row.run_id in on_front:
            state += ", front"
        log(f"{row.trial_id:<14}{_fmt(row.params.get('threshold')):>7}"
            f"{_fmt(row.params.get('tau')):>7}{row.params.get('K', ''):>4}  "
            f"{_fmt(row.knn_val_acc):>8}{_fmt(row.linear_val_acc):>9}"
            f"{_fmt(row.linear_test_acc):>9}  {state}")
    best = next((r for r in rows if r.model_uri and r.linear_val_acc is not None), None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    if best is not None:
        client.log_metric(parent_run_id, "best_linear_val_acc", best.linear_val_acc)
        client.set_tag(parent_run_id, BEST_RUN, best.run_id)
        if complete:
            register_best(store, best, f"{study}-encoder")
    if complete:
        client.set_terminated(parent_run_id, "FINISHED")
    footprint = study_footprint(store, study, dataset)
    if footprint is not None:
        mb = {k: v / 1e6 for k, v in footprint.items() if k != "kept_encoders"}
        log(f"\ndisk: {mb['total']:.1f} MB ({mb['artifacts']:.1f} MB of MLflow artifacts, "
            f"{mb['encoders']:.1f} MB of them the {footprint['kept_encoders']} kept encoder(s); "
            f"{mb['ray']:.1f} MB of Ray Tune state)")
    log(f"\nexport the best T per K:  python -m study.export --dataset {dataset} --study {study}"
        + _store_flag(store))
    log(f"the study's report:       python -m study.report --study {study}" + _store_flag(store))
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    log("browse every trial:       python -m study.ui" + _store_flag(store)
        + f", then open {runs_url(experiment_id)}")


def study_footprint(store: Store, study: str, dataset: str) -> dict[str, int] | None:
    """Bytes a study holds on disk in a local store: its runs' MLflow artifacts (of which the
    kept encoders) and its Ray Tune state (checkpoints of trials still to end). None where the
    artifacts live elsewhere (a tracking server)."""
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    from trainables.tune_trainable import ENCODER_FILE

    client = MlflowClient(store.tracking_uri)
    exp = client.get_experiment_by_name(dataset)
    if exp is None:
        return None
    runs = read_runs(store, exp.experiment_id, study_filter(study))
    out = {"artifacts": 0, "encoders": 0, "kept_encoders": 0,
           "ray": _bytes(store.ray_dir / study)}
    for r in runs:
        uri = urlparse(r.info.artifact_uri)
        if uri.scheme not in ("", "file"):
            return None
        root = Path(uri.path)
        out["artifacts"] += _bytes(root)
        encoder = root / ENCODER_FILE
        if encoder.is_file():
            out["encoders"] += encoder.stat().st_size
            out["kept_encoders"] += 1
    out["total"] = out["artifacts"] + out["ray"]
    return out


def _bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def register_best(store: Store, best: TrialRecord, name: str) -> None:
    """Log the best trial's encoder (its blocks as one ``nn.Sequential``: image in, h^K out) as
    an MLflow model (pickle, not the slow pt2) in its own run, and register it under ``name``."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from trainables.data import dataset_spec
    from trainables.models import DecoupledResNet
    from trainables.tune_trainable import ENCODER_FILE

    client = MlflowClient(store.tracking_uri)
    # Once per study: a driver stopped after registering does not register again on --resume.
    done = [v for v in client.search_model_versions(f"name = '{name}'")
            if v.run_id == best.run_id]
    if done:
        log(f"the best encoder is registered as {name} version {done[0].version}")
        return
    run = client.get_run(best.run_id)
    # The registry follows the tracking URI, so registering is fluent too.
    with _fluent_tracking_uri(store.tracking_uri):
        if MODEL_URI not in run.data.tags:
            p = run.data.params
            spec = dataset_spec(p["dataset"])
            model = DecoupledResNet(p["arch"], int(p["K"]), spec.channels, spec.stem,
                                    float(p["width"])).encoder()
            path = client.download_artifacts(best.run_id, ENCODER_FILE)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            with mlflow.start_run(run_id=best.run_id):
                info = mlflow.pytorch.log_model(
                    model, name="encoder", serialization_format="pickle",
                    pip_requirements=["torch", "torchvision"],
                )
            client.set_tag(best.run_id, MODEL_URI, info.model_uri)
            best.tags[MODEL_URI] = info.model_uri
        version = mlflow.register_model(best.model_uri, name)
    log(f"registered the best encoder as {version.name} version {version.version}")


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API on ``uri`` for one block, then as before.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to the process; left set,
    every later ``Store.at`` of this process (a second study, a test) would resolve to this store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable again


def _store_flag(store: Store) -> str:
    return "" if store.root == Path("mlruns").resolve() else f" --store {store.root}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) and abs(v) <= 1 else f"{v:.3g}"
