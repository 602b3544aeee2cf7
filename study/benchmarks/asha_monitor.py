"""ASHA's decisions under two monitors, replayed (``study.bench --monitor``): does the cheap kNN
monitor make Ray Tune's ASHA stop other trials than the full one would?

Each trial's per-epoch monitor values (both monitors measured on the same weights) are fed to
a real ``ray.tune.schedulers.ASHAScheduler``, set up as a study sets it up (``time_attr`` the
epoch, maximised, the budget's ``grace_period`` and ``max_t``, Ray's default reduction factor),
trial after trial in many random arrival orders: ASHA's rule depends on which results reached
a rung first. The same orders serve both monitors.
"""

from __future__ import annotations

import random
from types import SimpleNamespace


def stopped(curves: list[list[float]], order: list[int], grace_period: int,
            max_t: int) -> set[int]:
    """The trials ASHA stops before ``max_t`` when they report the epochs of ``curves`` (as
    many as were measured) in ``order``."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    asha = ASHAScheduler(time_attr="epoch", metric="monitor", mode="max", max_t=max_t,
                         grace_period=grace_period)
    out = set()
    for i in order:
        trial = SimpleNamespace(trial_id=str(i))
        asha.on_trial_add(None, trial)
        for epoch, value in enumerate(curves[i][:max_t], start=1):
            decision = asha.on_trial_result(None, trial, {"epoch": epoch, "monitor": value})
            if decision == TrialScheduler.STOP:
                if epoch < max_t:
                    out.add(i)
                break
    return out


def replay(full: list[list[float]], cheap: list[list[float]], grace_period: int, max_t: int,
           orders: int = 1000, seed: int = 0) -> dict:
    """How often ASHA (rungs from ``grace_period``, trials of ``max_t`` epochs) decides each
    trial alike under both monitors, over ``orders`` arrival orders; and how often it keeps the
    trial the full monitor ranks best at the last epoch measured."""
    rng = random.Random(seed)
    best = max(range(len(full)), key=lambda i: full[i][-1])
    same_trials = same_orders = kept_full = kept_cheap = 0
    for _ in range(orders):
        order = rng.sample(range(len(full)), len(full))
        a, b = stopped(full, order, grace_period, max_t), stopped(cheap, order, grace_period,
                                                                  max_t)
        same_trials += len(full) - len(a ^ b)
        same_orders += a == b
        kept_full += best not in a
        kept_cheap += best not in b
    return {"asha_grace_period": grace_period, "asha_max_t": max_t, "asha_orders": orders,
            "asha_same_decision": same_trials / (orders * len(full)),
            "asha_same_stopped_set": same_orders / orders,
            "asha_best_kept_full": kept_full / orders,
            "asha_best_kept_cheap": kept_cheap / orders}
