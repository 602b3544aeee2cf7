"""A table of text, and the numbers' formats, once for every table a study shows: the report's
(``study.report.tables``), the ``--compare`` table (``study.records.comparison``) and the
end-of-study console table (``study.engine.summary``).

A ``Table`` is a title, headers and rows of text, printed to the terminal and shown in an HTML
page alike. Accuracies are shown in %, like the paper; costs with SI prefixes; a cell's seeds as
mean ± sample std (a ``Stat``).
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from study.records.params import parse_param
from study.records.trials import TrialRecord


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std; None with one value
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def interval(self) -> tuple[float, float] | None:
        """The 95% t-interval of the mean; None with one value."""
        if self.std is None:
            return None
        from scipy.stats import t

        half = t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


@dataclass
class Column:
    key: str  # a metric name, or a TrialRecord property through ``get``
    title: str
    fmt: Callable[[float], str]
    get: Callable[[TrialRecord], float | None] | None = None

    def value(self, t: TrialRecord) -> float | None:
        return self.get(t) if self.get else t.metrics.get(self.key)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def text(self, limit: int | None = None) -> str:
        """The table for a terminal: its first ``limit`` rows (all without), then a line
        saying how many more the HTML holds."""
        rows = self.rows if limit is None else self.rows[:limit]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(self.headers)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        out = [self.title, line(self.headers), *(line(r) for r in rows)]
        if len(rows) < len(self.rows):
            out.append(f"... {len(self.rows) - len(rows)} more row(s) in the report's HTML")
        return "\n".join(out + ([self.note] if self.note else []))

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{note}")


def pct(v: float, digits: int = 1) -> str:
    """A fraction in %: ``71.3``."""
    return f"{100 * v:.{digits}f}"


def pct_spread(stat: Stat | None, digits: int = 2) -> str:
    """Mean ± sample std in %, the mean to ``digits`` decimals and the std to 2: ``71.32 ± 0.41``;
    the mean alone with one value; ``-`` with none."""
    if stat is None:
        return "-"
    return pct(stat.mean, digits) + (f" ± {pct(stat.std, 2)}" if stat.std is not None else "")


def signed(stat: Stat | None, interval: bool = True) -> str:
    """A difference in points of %: ``+0.42 ± 0.30 [-0.3, +1.2]`` (with its 95% t-interval, where
    ``interval``), or ``-``."""
    if stat is None:
        return "-"
    text = f"{100 * stat.mean:+.2f}"
    if stat.std is not None:
        text += f" ± {100 * stat.std:.2f}"
        if interval:
            lo, hi = stat.interval()
            text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return text


def si(v: float) -> str:
    """A count with an SI prefix: ``1.23 G``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g}"


def gb(v: float) -> str:
    """Bytes in GB: ``1.25 GB``."""
    return f"{v / 1e9:.2f} GB"


def num(v) -> str:
    """A value to 3 significant digits; one that comes back from MLflow as text too."""
    value = parse_param(v) if isinstance(v, str) else v
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def stat_text(stat: Stat | None, fmt: Callable[[float], str]) -> str:
    """A cell's seeds, mean ± std each through ``fmt`` (percentages through ``pct_spread``); the
    mean alone with one value or none spread (MACs are the same for every seed); ``-`` with
    none."""
    if fmt is pct:
        return pct_spread(stat, digits=1)
    if stat is None:
        return "-"
    if stat.std is None or stat.std == 0:
        return fmt(stat.mean)
    return f"{fmt(stat.mean)} ± {fmt(stat.std)}"


def t_text(T) -> str:
    """A threshold as the report writes it: ``none`` for Eq. (1)."""
    return "none" if T is None else T if isinstance(T, str) else f"{T:.3g}"
