"""What a study holds on disk in a local store: its runs' MLflow artifacts (of which the kept
encoders) and its Ray Tune state."""

from __future__ import annotations

from pathlib import Path

from study.records.store import Store
from study.records.trials import read_runs, study_filter
from trainables.specs import ENCODER_FILE


def study_footprint(store: Store, study: str, dataset: str,
                    artifact_uris: list[str] | None = None) -> dict[str, int] | None:
    """Bytes a study holds on disk in a local store: its runs' MLflow artifacts (of which the
    kept encoders) and its Ray Tune state (checkpoints of trials still to end). None where the
    artifacts live elsewhere (a tracking server). ``artifact_uris``: the study's runs' (the
    parent's included), where the caller has read them already."""
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    if artifact_uris is None:
        exp = MlflowClient(store.tracking_uri).get_experiment_by_name(dataset)
        if exp is None:
            return None
        artifact_uris = [r.info.artifact_uri
                         for r in read_runs(store, exp.experiment_id, study_filter(study))]
    out = {"artifacts": 0, "encoders": 0, "kept_encoders": 0,
           "ray": _bytes(store.ray_dir / study)}
    for artifact_uri in artifact_uris:
        uri = urlparse(artifact_uri)
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
