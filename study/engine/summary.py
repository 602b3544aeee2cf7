"""The end-of-study table on the console: the best trials, best first, grouped by split K in
a search over several (``study.engine.finish`` prints it once the study completes). Best first is
``study.records.trials.ranked``: each split's first row is its answer (``best_per_split``), and its
counts are ``split_counts``; a lost run is none of the study's trials and is left out."""

from __future__ import annotations

from study.engine.console import log
from study.records.formatting import num
from study.records.trials import Counts, TrialRecord, counted, ranked, split_counts


def print_table(rows: list[TrialRecord], study: str, top: int = 10,
                objectives: list | None = None) -> None:
    """The best ``top`` trials (every Pareto front member first in a multi-objective study)."""
    counts, lost = split_counts(rows), Counts.of(rows).lost_text
    rows = ranked(counted(rows))
    on_front: set[str] = set()
    if objectives and len(objectives) > 1:
        from study.records.pareto import finished_points, front

        members = front(finished_points(rows, objectives), objectives)
        on_front = {p.run_id for p in members}
        # Every front member is shown, then the best of the rest.
        rows = sorted(rows, key=lambda r: r.run_id not in on_front)
        top = max(top, len(on_front))
        log(f"\nPareto front over {', '.join(m for m, _ in objectives)}: {len(on_front)} of "
            f"the finished trials (marked 'front')")
    log(f"\n{study}: {len(rows)} trial run(s)" + (f" ({lost})" if lost else "")
        + ", best first by validation accuracy (test accuracy is reported, never used to "
        "choose)")
    header = (f"{'trial':<14}{'T':>7}{'tau':>7}{'K':>4}  {'knn val':>8}{'lin val':>9}"
              f"{'lin test':>9}  state")
    splits = sorted({r.K for r in rows})
    if on_front or len(splits) < 2:
        log(header)
        for row in rows[:top]:
            log(_line(row, on_front))
        return
    # The answer is per split: each K's best, under a line that says what became of its trials.
    per_split = max(3, top // len(splits))
    log(header)
    for K in splits:
        c, at = counts[K], [r for r in rows if r.K == K]
        log(f"-- K={K}: {c.trials} trial(s), {c.finished} finished, {c.stopped_early} stopped "
            f"early, {c.diverged} diverged" + (f" ({c.lost_text})" if c.lost else "")
            + (f"; the best {per_split} shown" if len(at) > per_split else ""))
        for row in at[:per_split]:
            log(_line(row, on_front))


def _line(row: TrialRecord, on_front: set[str]) -> str:
    state = ("diverged" if row.diverged else "stopped early" if row.early_stopped
             else row.status.lower())
    if row.run_id in on_front:
        state += ", front"
    return (f"{row.trial_id:<14}{_fmt(row.params.get('threshold')):>7}"
            f"{_fmt(row.params.get('tau')):>7}{row.params.get('K', ''):>4}  "
            f"{_fmt(row.knn_val_acc):>8}{_fmt(row.linear_val_acc):>9}"
            f"{_fmt(row.linear_test_acc):>9}  {state}")


def _fmt(v) -> str:
    """``-`` for none, an accuracy (a fraction) to 4 decimals, else ``num``'s 3 digits."""
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) and abs(v) <= 1 else num(v)
