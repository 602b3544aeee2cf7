"""The Pareto front of a multi-objective study: its finished trials that no other one beats.

A trial dominates another when it is at least as good in every objective and better in one.
Only finished trials count (``TrialRecord.finished``, the rule every reader chooses by): one
stopped early or diverged never reached its end, and its costs alone would put an untrained
network on the front; a lost run's trial was replaced by another.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.records.trials import TrialRecord


@dataclass
class Point:
    """A finished trial as the front sees it: its objectives' values."""

    trial: TrialRecord
    values: dict[str, float]  # objective metric -> value

    @property
    def trial_id(self) -> str:
        return self.trial.trial_id

    @property
    def run_id(self) -> str:
        return self.trial.run_id

    @property
    def params(self) -> dict:
        return self.trial.params


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


def finished_points(trials: list[TrialRecord], objectives: list) -> list[Point]:
    """Every finished trial (``TrialRecord.finished``) with all its objectives' values."""
    points = [Point(t, {name: t.metrics[name] for name, _ in objectives})
              for t in trials
              if t.finished and all(name in t.metrics for name, _ in objectives)]
    return sorted(points, key=lambda p: p.trial_id)
