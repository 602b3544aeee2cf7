"""The Pareto front of a multi-objective study: its finished trials that no other one beats.

A trial dominates another when it is at least as good in every objective and better in one.
Only finished trials count: one stopped early or diverged never reached its end, and its costs
alone would put an untrained network on the front.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.store import Store
from study.summary import parse_param


@dataclass
class Point:
    trial_id: str
    run_id: str
    values: dict[str, float]  # objective metric -> value
    params: dict


def dominates(a: dict[str, float], b: dict[str, float], objectives: list) -> bool:
    """``a`` at least as good as ``b`` in every (metric, mode), strictly better in one."""
    better = False
    for metric, mode in objectives:
        x, y = (a[metric], b[metric]) if mode == "max" else (-a[metric], -b[metric])
        if x < y:
            return False
        better |= x > y
    return better


def front(points: list[Point], objectives: list) -> list[Point]:
    """The non-dominated points, in the order given."""
    return [p for p in points
            if not any(dominates(q.values, p.values, objectives) for q in points if q is not p)]


def finished_points(store: Store, dataset: str, study: str, objectives: list) -> list[Point]:
    """Every finished trial of ``study`` with its objectives' values, from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    exp = client.get_experiment_by_name(dataset)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.study = '{study}' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )
    points = []
    for r in runs:
        m = r.data.metrics
        if "trial_id" not in r.data.tags or not all(name in m for name, _ in objectives):
            continue
        points.append(Point(r.data.tags["trial_id"], r.info.run_id,
                            {name: m[name] for name, _ in objectives},
                            {k: parse_param(v) for k, v in r.data.params.items()}))
    return sorted(points, key=lambda p: p.trial_id)
