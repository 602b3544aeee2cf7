"""The ``--compare`` tables, for the terminal and the report alike: the overall difference
(searched - paper) on linear test and validation accuracy, and what T and what tau did (the
2 x 2, ``study.records.comparison``), each difference with what its seeds can decide
(``study.records.paired``)."""

from __future__ import annotations

from study.records import paired
from study.records.comparison import (
    METRICS,
    Row,
    attribution,
    by_point,
    comparison,
    config_label,
    kept_range,
    share_text,
)
from study.records.formatting import Table, pct_spread, signed
from study.records.plan import Plan
from study.records.trials import TrialRecord


def _power_cells(r: Row) -> list[str]:
    if r.same:
        return ["-", "-"]
    return [paired.detectable_text(r.difference), paired.seeds_text(paired.EFFECT, r.difference)]


HEADERS = ["K", "metric", "searched", "paper", "searched %", "paper %",
           "difference (pts) [95% CI]", "seeds", "detectable (pts)", "seeds for 1 pt", "verdict"]
EFFECT_HEADERS = ["K", "effect", "cells (first - second)", "first %", "second %",
                  "difference (pts) [95% CI]", "seeds", "detectable (pts)", "seeds for 1 pt",
                  "verdict"]


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The overall rows as table cells: K, metric, the two configurations' T and tau, both
    arms, the difference, what the seeds can detect, the verdict."""
    names = dict(METRICS)
    return [[str(r.K), names[r.metric], config_label(r.first_config),
             config_label(r.second_config), pct_spread(r.first), pct_spread(r.second),
             signed(r.difference), str(r.difference.n if r.difference else 0),
             *_power_cells(r), r.verdict] for r in rows]


def comparison_table(trials: list[TrialRecord], plan: Plan) -> Table:
    """The comparison of a ``--compare`` study from its trials and its plan, for the terminal
    and the report alike."""
    rows = comparison(trials, plan.points, plan.arms)
    missing = [f"K={a['K']}: no finished trial in {plan.compare} ({a['trials']} ran), "
               f"nothing to compare" for a in plan.arms if "searched" not in a]
    return Table(f"Searched best against the paper's T, {plan.seeds} seed(s) each "
                 f"(search: {plan.compare}; difference = searched - paper, paired by seed; "
                 f"detectable: the smallest effect these seeds find with "
                 f"{paired.POWER:.0%} power)", HEADERS, table_rows(rows), "; ".join(missing))


def attribution_table(trials: list[TrialRecord], plan: Plan) -> Table | None:
    """What T and what tau did, split by split, on linear test accuracy; None for a comparison
    saved before the 2 x 2 (two cells a split)."""
    if not any("searched_no_T" in a for a in plan.arms):
        return None
    rows = attribution(trials, plan.points, plan.arms)
    cells = [[str(r.K), r.effect,
              f"{config_label(r.first_config)} - {config_label(r.second_config)}",
              pct_spread(r.first), pct_spread(r.second), signed(r.difference),
              str(r.difference.n if r.difference else 0), *_power_cells(r), r.verdict]
             for r in rows]
    runs = by_point(trials, plan.points)
    kept = []
    for arm in plan.arms:
        for cell in ("searched", "paper"):
            if cell == "paper" and arm.get("paper") == arm.get("searched"):
                continue  # one configuration
            if cell in arm and (k := kept_range(runs.get(arm[cell], {}).values())):
                kept.append(f"K={arm['K']} {config_label(plan.points[arm[cell]])}: "
                            f"{share_text(k[:2])} positive, {share_text(k[2:])} negative")
    note = ("Over the seeds all four cells of a split finished: overall = (searched tau vs "
            "paper's, no threshold) + (searched T vs none) - (paper's T vs none), seed by seed. "
            "With a threshold, T and tau move together (the overall row). Pairs kept at the "
            "last epoch, over blocks and seeds: "
            + ("; ".join(kept) if kept else "not recorded"))
    return Table(f"What T and what tau did: linear test accuracy, {plan.seeds} seed(s), paired "
                 f"by seed (search: {plan.compare})", EFFECT_HEADERS, cells, note)
