"""The report's tables, printed to the terminal and shown in the page alike.

Builders take a ``StudyRecord`` (or what ``gather`` gathered from the store) and only format,
through the table type and the number formats of ``study.records.formatting``: accuracies in %, like
the paper, costs with SI prefixes; a cell's seeds as mean ± sample std.
"""

from __future__ import annotations

import math
from collections import Counter

from study.records.formatting import (
    Column,
    Stat,
    Table,
    gb,
    pct,
    si,
    signed,
    stat_text,
    t_text,
)
from study.records.trials import ranked, split_counts
from study.report.gather import (
    Front,
    StudyRecord,
    best_per_K,
    cells,
    paired_gains,
    paper_gain,
)
from trainables.paper import PAPER_T, PROTOCOL, PaperCell

GRID_COLUMNS = [
    Column("linear_test_acc", "linear test %", pct),
    Column("linear_val_acc", "linear val %", pct),
    Column("knn_val_acc", "kNN val %", pct),
    Column("last_block_rank", "eff. rank (last block)", lambda v: f"{v:.1f}",
           get=lambda t: t.last_block_rank),
    Column("max_block_macs", "max block MACs", si),
    Column("max_block_head_macs", "max block+head MACs", si),
    Column("peak_memory_bytes", "peak memory", gb),
]


def _paper_text(p: PaperCell | None, what: str) -> str:
    if p is None:
        return "-"
    if what == "accuracy":
        return f"{p.accuracy:.1f}" + (f" ± {p.std:.1f}" if p.std is not None else "")
    if what == "macs":
        return si(p.max_block_macs) if p.max_block_macs else "-"
    return f"{p.memory_gb:.1f} GB" if p.memory_gb else "-"


def grid_table(record: StudyRecord) -> Table:
    """One row per cell: mean +- std over its finished seeds, the paper's figure beside."""
    columns = [c for c in GRID_COLUMNS
               if any(c.value(t) is not None for t in record.finished)]
    headers = ["cell", "seeds", *(c.title for c in columns),
               "paper test %", "paper max block MACs", "paper memory"]
    rows = []
    for cell in cells(record):
        stats = [stat_text(Stat.of([c.value(t) for t in cell.finished]), c.fmt) for c in columns]
        rows.append([cell.name, f"{len(cell.finished)}/{cell.trials}", *stats,
                     _paper_text(cell.paper, "accuracy"), _paper_text(cell.paper, "macs"),
                     _paper_text(cell.paper, "memory")])
    return Table(
        f"Cells of {record.grid or 'the re-run'}: mean ± std over seeds (finished/all)",
        headers, rows,
        "The paper's figures (Table 1: CIFAR-10, STL-10; Table 2: Fashion-MNIST) stand beside "
        "the cells they report: Eq. (1), or Eq. (5) at the paper's T with both pair kinds, "
        f"tau {PROTOCOL.tau:g}, at the paper's full budget. Max block MACs count the block alone, "
        "as Table 1.",
    )


def gain_table(record: StudyRecord) -> Table | None:
    """Per K and T: test accuracy of Eq. (5) minus that of Eq. (1), paired by seed."""
    rows = []
    for (K, T, sub, tau), gains in paired_gains(record):
        stat = Stat.of(gains)
        if stat is None:
            continue
        paper = paper_gain(record.dataset, K, T, sub, tau)
        rows.append([str(K), f"{T:g}", sub, f"{tau:g}", str(stat.n),
                     signed(stat, interval=False),
                     "-" if paper is None else f"{paper:+.1f}"])
    if not rows:
        return None
    return Table("Gain of T over Eq. (1) in linear test accuracy (points of %), paired by seed",
                 ["K", "T", "subsample", "tau", "seeds", "gain", "paper"], rows,
                 "Each seed's Eq. (5) trial minus the Eq. (1) trial of the same K, tau and seed.")


def best_per_K_table(record: StudyRecord) -> Table:
    rows = []
    counts = split_counts(record.trials)  # a lost run is none of its split's trials
    best = best_per_K(record)
    for t in best:
        m = t.metrics
        rows.append([str(t.K), t_text(t.threshold),
                     f"{t.params.get('threshold_slope', 0.0):.3g}",
                     f"{t.params.get('tau', PROTOCOL.tau):.3g}", t.params.get("head", "paper"),
                     t.params.get("subsample", "both"), pct(m["linear_val_acc"]),
                     pct(m.get("knn_val_acc", math.nan)), pct(m["linear_test_acc"]),
                     t_text(PAPER_T.get(record.dataset, "-")), t.trial_id,
                     f"{counts[t.K].finished}/{counts[t.K].trials}"])
    chosen = {t.K for t in best}
    notes = [f"K={K}: " + (f"none of {c.trials} trial(s) finished"
                           + (f" ({c.lost_text})" if c.lost else "")
                           if K not in chosen else c.lost_text)
             for K, c in counts.items() if K not in chosen or c.lost]
    return Table("Best T per K (chosen on validation accuracy)",
                 ["K", "T", "T slope", "tau", "head", "subsample", "linear val %", "kNN val %",
                  "linear test %", "paper T", "trial", "finished/trials"], rows, "; ".join(notes))


def trials_table(record: StudyRecord) -> Table:
    """Every trial, best first; a search's grouped by K (each split is its own search)."""
    order = ranked(record.trials)
    by_K = record.kind == "search" and len({t.K for t in order}) > 1
    if by_K:
        order = sorted(order, key=lambda t: t.K)  # stable: best first within each K
    rows = [[t.trial_id, str(t.K), t_text(t.threshold), f"{t.params.get('tau', PROTOCOL.tau):.3g}",
             t.params.get("subsample", "both"), str(t.params.get("seed", 0)),
             pct(t.metrics["knn_val_acc"]) if "knn_val_acc" in t.metrics else "-",
             pct(t.metrics["linear_val_acc"]) if "linear_val_acc" in t.metrics else "-",
             str(t.epochs or "-"), t.state]
            for t in order]
    states = Counter(t.state for t in record.trials)
    return Table("Every trial" + (" by K" if by_K else "") + ", best first by validation accuracy",
                 ["trial", "K", "T", "tau", "subsample", "seed", "kNN val %", "linear val %",
                  "epochs", "state"], rows,
                 ", ".join(f"{n} {s}" for s, n in states.items()))


def front_table(front: Front) -> Table:
    """The Pareto front's members, in ascending order of the last objective (the cost)."""
    names = [m for m, _ in front.objectives]
    return Table(
        f"Pareto front over {', '.join(f'{m} ({mode})' for m, mode in front.objectives)}: "
        f"{len(front.members)} of {len(front.points)} finished trials",
        ["trial", "K", "stages", "head", "T", "slope", "tau", *names],
        [[p.trial_id, str(p.params.get("K")), str(p.params.get("stages", 1)),
          str(p.params.get("head", "paper")),
          t_text(p.params.get("threshold")), f"{p.params.get('threshold_slope', 0):.3g}",
          f"{p.params.get('tau', PROTOCOL.tau):.3g}",
          *(pct(p.values[n]) if n.endswith("_acc") else si(p.values[n]) for n in names)]
         for p in sorted(front.members, key=lambda p: p.values[names[-1]])],
        "Stopped-early and diverged trials never enter the front."
        + ("" if front.marked else " No finished trial ran the space's first point (the paper's)."),
    )


def importance_table(importances: dict[str, float], stratum: str = "") -> Table:
    return Table("Parameter importances" + (f", {stratum}" if stratum else ""),
                 ["parameter", "importance"],
                 [[k, f"{v:.3f}"] for k, v in importances.items()])

