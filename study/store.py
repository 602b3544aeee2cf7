"""Where a study keeps its records: ``./mlruns`` by default, every path absolute.

- MLflow: SQLite ``mlruns/mlflow.db``, artifacts under ``mlruns/artifacts`` (or a server given by
  ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``); one experiment per data set.
- Optuna: ``mlruns/optuna.db``, one study per (data set, study name).
- Ray Tune's experiment state and trial checkpoints: ``mlruns/ray/<study>``.
- ``mlruns/studies/<study>.json``: what ``--resume`` needs to continue a study.
- ``mlruns/logs/<study>.log``: the libraries' own messages during the study.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trainables.errors import ConfigError


@dataclass(frozen=True)
class Store:
    root: Path
    tracking_uri: str

    @classmethod
    def at(cls, root: str | Path = "mlruns", tracking_uri: str | None = None) -> Store:
        root = Path(root).expanduser().resolve()  # Ray trials change directory: absolute only
        root.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = f"sqlite:///{root / 'mlflow.db'}"
        elif uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
        return cls(root, uri)

    @property
    def flag(self) -> str:
        """`` --store ROOT`` for a command line the user is told to run; empty for the default."""
        return "" if self.root == Path("mlruns").resolve() else f" --store {self.root}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    def log_file(self, study: str) -> Path:
        """Where Ray's, MLflow's and Optuna's own messages of a study go."""
        return self.root / "logs" / f"{study}.log"

    def study_file(self, study: str) -> Path:
        return self.root / "studies" / f"{study}.json"

    def save_study(self, study: str, record: dict) -> None:
        path = self.study_file(study)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")  # a stop mid-write leaves the last record whole
        part.write_text(json.dumps(record, indent=1))
        os.replace(part, path)

    def load_study(self, study: str) -> dict:
        path = self.study_file(study)
        if not path.is_file():
            known = sorted(p.stem for p in (self.root / "studies").glob("*.json"))
            raise ConfigError(
                f"no study named {study!r} in {self.root}; known: {', '.join(known) or 'none'}"
            )
        return json.loads(path.read_text())

    def latest_study(self, dataset: str) -> str:
        """The most recently started study of ``dataset`` (for a bare ``--resume``)."""
        records = [
            (json.loads(p.read_text()), p.stem)
            for p in (self.root / "studies").glob("*.json")
        ]
        mine = sorted((r["created"], name) for r, name in records if r["dataset"] == dataset)
        if not mine:
            raise ConfigError(f"no study of {dataset} in {self.root}")
        return mine[-1][1]

    def experiment_id(self, dataset: str) -> str:
        """The data set's MLflow experiment, created here (by the driver) before any trial."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(dataset)
        if exp is not None:
            return exp.experiment_id
        location = self.artifacts.as_uri() if self.tracking_uri.startswith("sqlite") else None
        return client.create_experiment(dataset, artifact_location=location)


def plan_kind(plan: dict) -> str:
    """search, grid (``--grid``), rerun (``--config``) or compare (``--compare``)."""
    return ("grid" if plan.get("grid") else "rerun" if plan.get("config_file")
            else "compare" if plan.get("compare") else "search")


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


def git_commit() -> str | None:
    """The project's commit, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
