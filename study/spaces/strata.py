"""Strata: a search answers for every split.

The split (K, and the local head where a space searches it) is a stratum of a search, not a
searched dimension: each stratum gets its own share of the trials, its own sampler history (an
Optuna study of its own, ``<dataset>/<study>/K=4``) and its own ASHA brackets, and the paper's
point at that split is its first trial. A sampler over a categorical K concentrates on whichever
split wins early (one block, end-to-end SimCLR, usually), and ASHA comparing every trial at a
rung stops deep splits for being deep, not for a bad T.

Why one Optuna study per stratum rather than one sampler conditioned on K: TPE's history is then
exactly the stratum's trials (a K = 1 trial says nothing about T at K = 8), each stratum's
history, importances and best are what ``optuna-dashboard`` shows per study, and the studies
live in the same storage, so that ``--resume`` and the dashboard work as before.

A multi-objective space keeps K as a searched dimension: there the trade-off between the split's
cost and accuracy is the point. Its early stopping still must not compare across what sets a
trial's cost: ASHA ranks trials on kNN accuracy alone, so one bracket for every K, head and
stage count would stop the cheap trials (deep splits, the paper's small head) for being cheap,
before they could reach the front. Its ASHA brackets are per cost stratum (``bracket_keys``):
a trial is stopped only for trailing trials of the same cost.

``stages`` changes a trial's time, never its accuracy (the pipeline is bit-equal to one stage):
a single-objective space may not search it (``study.spaces.loading`` says why), and it splits
only a front's brackets.
"""

from __future__ import annotations

import itertools

from trainables.errors import ConfigError

STRATUM_KEYS = ("K", "head")  # what makes a split, where a space searches it
COST_KEYS = ("K", "head", "stages")  # what sets a trial's cost, where a space searches it


def stratum_keys(search: dict, objectives) -> list[str]:
    """The searched parameters that stratify a search: none in a multi-objective space."""
    if len(objectives) > 1:
        return []
    return [k for k in STRATUM_KEYS if k in search]


def bracket_keys(search: dict, objectives) -> list[str]:
    """What chooses a trial's ASHA brackets: its split in a stratified search, what sets its
    cost in a multi-objective one (``[]``: one bracket set for every trial)."""
    if len(objectives) > 1:
        return [k for k in COST_KEYS if k in search]
    return stratum_keys(search, objectives)


def strata_of(search: dict, objectives, only_K: list[int] | None = None) -> list[dict]:
    """Every stratum of a space, in the order of its choices (``[]``: the search is not
    stratified); ``only_K`` keeps those splits (``--K``)."""
    keys = stratum_keys(search, objectives)
    if not keys:
        return []
    choices = [search[k].choices for k in keys]
    out = [dict(zip(keys, combo)) for combo in itertools.product(*choices)]
    if only_K:
        out = [s for s in out if s["K"] in only_K]
    return out


def check_only_K(only_K: list[int], search: dict, source: str) -> None:
    """``--K``: splits that the space searches."""
    if "K" not in search:
        raise ConfigError(f"--K {','.join(map(str, only_K))}: {source} does not search K")
    allowed = search["K"].choices
    for K in only_K:
        if K not in allowed:
            raise ConfigError(f"--K {K} is not a split of {source}; allowed: "
                              f"{', '.join(map(str, allowed))}")


def parse_K(text: str) -> list[int]:
    """``--K 8`` or ``--K 4,8``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--K {text!r} must be split sizes separated by commas, "
                          f"e.g. 8 or 4,8") from None
    if not values or len(set(values)) < len(values):
        raise ConfigError(f"--K {text!r} must name each split once, e.g. 8 or 4,8")
    return values


def label(stratum: dict) -> str:
    """``K=4`` (``K=4 head=mlp``): the stratum's name in tables and Optuna study names."""
    return " ".join(f"{k}={v}" for k, v in stratum.items())


def of_config(config: dict, keys) -> tuple:
    """The stratum a trial's configuration falls in, as a hashable key."""
    return tuple((k, config.get(k)) for k in keys)


def shares(trials: int, n: int) -> list[int]:
    """``trials`` shared by ``n`` strata: equal, the first strata one more where it does not
    divide."""
    return [trials // n + (i < trials % n) for i in range(n)]


def stratum_points(points: list[dict], stratum: dict) -> list[dict]:
    """A stratum's points to evaluate first, without the stratum's keys: the space's points at
    this split, else its first point moved to this split (the paper gives one T per data set,
    and the space names its point at the paper's split)."""
    same = [p for p in points if all(p.get(k) == v for k, v in stratum.items())]
    return [{k: v for k, v in p.items() if k not in stratum} for p in (same or points[:1])]


def optuna_study_name(dataset: str, study: str, stratum: dict | None = None) -> str:
    """The Optuna study of a search (``digits/<study>``) or of one of its strata
    (``digits/<study>/K=4``), in the study's Optuna storage."""
    return f"{dataset}/{study}" + (f"/{label(stratum).replace(' ', '/')}" if stratum else "")


def optuna_study_names(plan) -> list[str]:
    """Every Optuna study of a search's plan: one, or one per stratum."""
    if not plan.strata:
        return [optuna_study_name(plan.dataset, plan.study)]
    return [optuna_study_name(plan.dataset, plan.study, s) for s in plan.strata]
