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
import re
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
    def sqlite_file(self) -> Path | None:
        """The MLflow database file of a SQLite store; None through a server."""
        prefix = "sqlite:///"
        return Path(self.tracking_uri[len(prefix):]) if self.tracking_uri.startswith(prefix) \
            else None

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

    def experiment_id(self, dataset: str) -> str:
        """The data set's MLflow experiment, created here (by the driver) before any trial."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(dataset)
        if exp is None:
            location = self.artifacts.as_uri() if self.tracking_uri.startswith("sqlite") else None
            try:
                experiment_id = client.create_experiment(dataset, artifact_location=location)
            except MlflowException as e:
                # Another driver on the same server made it between the lookup and here
                # (three studies starting at once): theirs is ours.
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(dataset).experiment_id
        else:
            experiment_id = exp.experiment_id
        if self.sqlite_file is not None:
            write_ahead_log(self.sqlite_file)
        return experiment_id


# Where SQLite's write-ahead log cannot work: its readers and writer share memory (the -shm
# file), which one host's processes can, another host's cannot (https://sqlite.org/wal.html).
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "lustre", "gpfs", "beegfs",
                       "ceph", "fuse.ceph-fuse", "fuse.sshfs", "fuse.glusterfs", "glusterfs",
                       "afs", "wekafs", "fuse.s3fs"}


def write_ahead_log(db: Path) -> None:
    """SQLite's write-ahead log for a store's database: kept in the file, so every later
    connection (the driver's MLflow and Optuna, the UI, the readers) uses it.

    A commit then appends to the log instead of writing a rollback journal and the database:
    about a fifth less time per MLflow write (``study.bench --bookkeeping``), as durable (a
    commit is still synced), and a reader (the UI, the report) never blocks the driver's
    writes. Left as it is on a network file system (see ``NETWORK_FILESYSTEMS``)."""
    import sqlite3

    if not db.is_file() or filesystem_type(db) in NETWORK_FILESYSTEMS:
        return
    connection = sqlite3.connect(db, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass  # another process holds the database: it stays as it is, correct and slower
    finally:
        connection.close()


def filesystem_type(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The type of the file system ``path`` lies on (Linux's ``mounts``), None where unknown."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    path, best, kind = path.resolve(), -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # Octal escapes (a space is \040); of two mounts on one directory the later is in effect.
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (path == point or point in path.parents) and len(point.parts) >= best:
            best, kind = len(point.parts), fields[2]
    return kind
