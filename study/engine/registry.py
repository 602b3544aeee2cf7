"""The study's best encoder as an MLflow model, registered once per study as
``<study>-encoder``: a driver stopped after registering does not register again on
``--resume``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from study.engine.console import log
from study.records.store import Store
from study.records.trials import MODEL_URI, TrialRecord


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
            # Logged into the trial's run by its id, never by reopening it: a fluent run would
            # set it RUNNING until closed, and a driver killed in between would leave the best
            # trial's run RUNNING, for --resume to close as lost.
            info = mlflow.pytorch.log_model(
                model, name="encoder", serialization_format="pickle",
                pip_requirements=["torch", "torchvision"], run_id=best.run_id,
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
