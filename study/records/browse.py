"""Where a person browses a study: the MLflow UI on the store (``study.ui`` runs it) and the
address of a data set's runs table."""

from __future__ import annotations

import sys

from study.records.store import Store


def ui_command(store: Store, port: int) -> list[str]:
    """`mlflow ui` on the store at 127.0.0.1:``port`` (what ``study.ui`` runs)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri,
            "--host", "127.0.0.1", "--port", str(port)]


def experiments(store: Store, dataset: str | None = None) -> dict[str, str]:
    """The store's data sets (MLflow experiments) and their ids, or just ``dataset``'s."""
    from mlflow.tracking import MlflowClient

    found = {e.name: e.experiment_id
             for e in MlflowClient(store.tracking_uri).search_experiments()
             if e.name != "Default"}
    return {n: i for n, i in found.items() if dataset is None or n == dataset}


def runs_url(experiment_id: str, port: int = 5000, base: str | None = None) -> str:
    """Where the UI (at ``base``, default 127.0.0.1:``port``) shows an experiment's runs table
    (not its GenAI overview)."""
    base = base or f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
