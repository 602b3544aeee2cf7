"""What paired differences over seeds can decide: whether a difference is there, ruled out, or
undecided, the smallest effect the seeds would detect and the seeds an effect would need.

Two configurations run on the same seeds give one difference per seed; their mean is tested
against 0 with the paired t-test (the 95% interval of ``Stat.interval``). An interval that holds
0 means "no difference" only where it also leaves out an effect worth having: the verdict says
"no difference of 1 pt or more" where the whole interval lies within ±1 point, and "too few
seeds to tell" otherwise. Beside it, for planning: the *detectable* effect, the smallest true
difference that the test finds with 80% power at these seeds and this spread (the noncentral t
distribution, two-sided at 5%), and the *seeds needed* for an effect, the fewest with which the
test finds it with 80% power. Both read the measured spread as the true one, as any such plan
does: with few seeds it is itself uncertain.
"""

from __future__ import annotations

import math

from study.records.formatting import Stat

ALPHA = 0.05  # two-sided, as the 95% interval
POWER = 0.8
EFFECT = 0.01  # 1 point: the paper's gain of T at K = 8 on Fashion-MNIST (Table 2, 87.2 -> 88.2)
MOST_SEEDS = 10_000


def power(n: int, effect: float, std: float) -> float:
    """The paired t-test's power at ``n`` seeds for a true mean difference ``effect`` when the
    per-seed differences spread by ``std``."""
    from scipy.stats import nct, t

    if n < 2:
        return 0.0
    if std <= 0:
        return 1.0 if effect else ALPHA
    df, shift = n - 1, abs(effect) * math.sqrt(n) / std
    critical = t.ppf(1 - ALPHA / 2, df)
    # SciPy's noncentral t gives NaN for some far tails (at a large shift, the wrong-sign tail
    # is below 1e-15): a NaN tail counts as 0 below and as the side of the shift above.
    upper, lower = float(nct.sf(critical, df, shift)), float(nct.cdf(-critical, df, shift))
    upper = upper if math.isfinite(upper) else float(shift > critical)
    return upper + (lower if math.isfinite(lower) else 0.0)


def detectable(d: Stat | None) -> float | None:
    """The smallest effect these seeds detect with 80% power, at their paired spread; None
    without a spread (one seed)."""
    from scipy.optimize import brentq

    if d is None or d.std is None:
        return None
    if d.std == 0:
        return 0.0
    high = d.std
    while power(d.n, high, d.std) < POWER:
        high *= 2
    return float(brentq(lambda e: power(d.n, e, d.std) - POWER, 0.0, high, xtol=1e-6))


def seeds_needed(effect: float, d: Stat | None) -> int | None:
    """The fewest seeds that detect ``effect`` with 80% power at the measured paired spread;
    None without a spread or beyond ``MOST_SEEDS``."""
    if d is None or d.std is None or not effect:
        return None
    n = 2
    while power(n, effect, d.std) < POWER:
        # Doubling, then the last step halved back: a few dozen noncentral t evaluations.
        if n >= MOST_SEEDS:
            return None
        n = min(n * 2, MOST_SEEDS)
    low = n // 2 if n > 2 else 1
    while n - low > 1:
        mid = (low + n) // 2
        low, n = (low, mid) if power(mid, effect, d.std) >= POWER else (mid, n)
    return n


def verdict(d: Stat | None, better: str, worse: str) -> str:
    """A paired difference in words: ``better`` or ``worse`` where its 95% interval leaves out
    0; "no difference of 1 pt or more" where the interval lies within ±``EFFECT`` (the seeds
    rule out an effect that large, an equivalence test); else "too few seeds to tell". The
    detectable effect and the seeds needed are beside it, for planning, not for the verdict."""
    if d is None:
        return "no seed finished in all the cells compared"
    ci = d.interval()
    if ci is None:
        return "one seed: no spread to judge by"
    if not ci[0] <= 0 <= ci[1]:
        return better if d.mean > 0 else worse
    if -EFFECT < ci[0] and ci[1] < EFFECT:
        return f"no difference of {100 * EFFECT:g} pt or more"
    return "too few seeds to tell"


def seeds_text(effect: float, d: Stat | None) -> str:
    """``seeds_needed`` as a cell: ``7``, ``> 10000`` or ``-``."""
    if d is None or d.std is None:
        return "-"
    n = seeds_needed(effect, d)
    return str(n) if n is not None else f"> {MOST_SEEDS}"


def detectable_text(d: Stat | None) -> str:
    """``detectable`` in points: ``±1.42``, or ``-``."""
    smallest = detectable(d)
    return "-" if smallest is None else f"±{100 * smallest:.2f}"
