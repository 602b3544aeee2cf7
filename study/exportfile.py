"""A ``study.export`` file read back: the chosen configurations that ``study.train --config``
and ``study.tune --config`` re-run (the writing side is the ``study.export`` command)."""

from __future__ import annotations

from pathlib import Path

from study.space import read_yaml
from trainables.config import TrainConfig
from trainables.errors import ConfigError

CONFIG_KEYS = [k for k in TrainConfig.__dataclass_fields__ if k not in ("device", "download")]


def load_export(path: str | Path, K: int | None = None) -> dict:
    """The training configuration in an export file: the best, or the best for ``K``."""
    data = _read(path)
    if K is None:
        return dict(data["best"]["config"])
    if K not in data["per_K"]:
        raise ConfigError(f"{path} has no entry for K={K}; it has K in "
                          f"{', '.join(map(str, data['per_K']))}")
    return dict(data["per_K"][K]["config"])


def points(path: str | Path) -> list[dict]:
    """Every distinct configuration of an export file (best and per K)."""
    data = _read(path)
    configs = [data["best"]["config"], *(e["config"] for e in data["per_K"].values())]
    unique = []
    for c in configs:
        if c not in unique:
            unique.append(c)
    return unique


def _read(path: str | Path) -> dict:
    data = read_yaml(path, "config file")
    if not isinstance(data, dict) or "best" not in data or "per_K" not in data:
        raise ConfigError(f"{path} is not a study.export file (no 'best' / 'per_K')")
    return data
