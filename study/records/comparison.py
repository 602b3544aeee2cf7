"""The searched T against the paper's T, over seeds, and what each of T and tau did: the
comparison a researcher wants after a search (``python -m study.tune --compare STUDY --seeds N``).

For each split K of the searched study, the 2 x 2 of threshold by temperature is re-run to its
end with the same N seeds: the search's best configuration at that K (chosen on validation
accuracy), the paper's point at that K (the same configuration with the paper's searched values:
its T and tau), and each of the two with no threshold (Eq. 1) at its own tau. Paired by seed:

- the overall difference, searched - paper (T and tau moved at once: what a search gains);
- T's effect at each tau: (searched T, searched tau) - (no T, searched tau), and the same at the
  paper's tau;
- tau's effect with no threshold: (no T, searched tau) - (no T, paper tau), T held out.

The overall difference is exactly tau's effect without T plus T's effect at the searched tau
minus T's at the paper's, seed by seed. Each difference is the mean +- std of the per-seed
differences with its 95% t-interval, the smallest effect the seeds would detect and the seeds an
effect of 1 point would need (``study.records.paired``). Configurations that coincide (the
search's best is the paper's point) are trained once: their difference is 0 by construction,
and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.records import paired
from study.records.formatting import Stat, num
from study.records.params import parse_param
from study.records.plan import Plan, study_splits
from study.records.store import Store
from study.records.trials import TrialRecord, best_per_split, read_trials, split_counts
from study.spaces.strata import stratum_points
from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.paper import PROTOCOL, paper_point

METRICS = (("linear_test_acc", "linear test"), ("linear_val_acc", "linear val"))


def no_threshold(config: dict) -> dict:
    """``config`` under Eq. (1): no threshold, so no per-block slope of it (a slope needs a T)
    and the protocol's subsampling (which does nothing without a T): two no-T cells that differ
    only there are one configuration, trained once."""
    out = {**config, "threshold": None}
    if "threshold_slope" in out:
        out["threshold_slope"] = 0.0
    if "subsample" in out:
        out["subsample"] = PROTOCOL.subsample
    return out


def compare_points(store: Store, dataset: str, searched: str, space) -> tuple[list, list]:
    """The points to re-run (configurations, each once) and the arms: for each split K of the
    searched study, ``{"K", "trials", "finished"}`` and, where it has a best, each cell of the
    2 x 2 (``CELLS``: ``"searched": i``, ``"paper": j``, ...) as an index into the points."""
    from study.records.exported import CONFIG_KEYS
    plan = Plan.load(store, searched)
    if plan.kind != "search":
        raise ConfigError(f"--compare {searched}: a {plan.kind} study has no search to "
                          f"compare; give a search's name")
    trials = read_trials(store, dataset, searched)
    answer = best_per_split(trials)
    if not answer:
        raise ConfigError(f"--compare {searched}: the study has no finished trial yet")
    searched_keys = [k for k in space.search if k not in ("K", "head")]
    points: list[dict] = []
    arms = []
    for K, counts in split_counts(trials, study_splits(store, searched)).items():
        best = answer.get(K)
        if best is None:
            arms.append({"K": K, "trials": counts.trials, "finished": 0})
            continue
        config = {k: best.params[k] for k in CONFIG_KEYS
                  if k in best.params and k not in ("data_dir", "seed")}
        stratum = {k: config.get(k) for k in ("K", "head") if k in space.search}
        # The paper's T and tau for the data set (trainables.paper); the space's own point
        # stands in where the paper has none (the offline digits).
        paper = paper_point(dataset) or next(
            iter(stratum_points(space.points_to_evaluate, stratum or {"K": K})), None)
        if paper is None:
            raise ConfigError(f"--compare {searched}: the paper gives no T for {dataset} and "
                              f"{space.source} has no points_to_evaluate to stand in")
        # The paper's protocol for every searched value: its point's, else the space's train:
        # (the searched best differs from it in what the search chose, nothing else).
        protocol = {k: getattr(space.train, k, TrainConfig.__dataclass_fields__[k].default)
                    for k in searched_keys}
        paper_config = {**config, **protocol,
                        **{k: v for k, v in paper.items() if k in searched_keys}}
        arm = {"K": K, "trials": counts.trials, "finished": counts.finished}
        # The 2 x 2: each of the two with no threshold (Eq. 1) at its own tau.
        cells = {"searched": config, "paper": paper_config,
                 "searched_no_T": no_threshold(config), "paper_no_T": no_threshold(paper_config)}
        for name, c in cells.items():
            if c not in points:
                points.append(c)
            arm[name] = points.index(c)
        arms.append(arm)
    return points, arms


CELLS = ("searched", "searched_no_T", "paper", "paper_no_T")
# Each difference: its name, the two cells (first - second), its verdict's words either way.
OVERALL = ("overall: searched - paper", "searched", "paper", "searched better",
           "paper's point better")
EFFECTS = (OVERALL,
           ("searched T vs none, at the searched tau", "searched", "searched_no_T", "T helps",
            "T hurts"),
           ("paper's T vs none, at the paper's tau", "paper", "paper_no_T", "T helps", "T hurts"),
           ("searched tau vs paper's, no threshold", "searched_no_T", "paper_no_T",
            "searched tau better", "paper's tau better"))
NEARLY_ALL = 0.95  # a T that keeps this share of both kinds of pairs at every block is no T


@dataclass
class Row:
    """One paired difference of a split on one metric: ``first`` - ``second``, seed by seed,
    over the seeds both cells finished."""

    K: int
    metric: str
    effect: str
    first: Stat | None
    second: Stat | None
    difference: Stat | None
    same: bool  # one configuration: 0 by construction
    first_config: dict
    second_config: dict
    words: tuple[str, str] = ("first better", "second better")
    kept: str = ""  # where first's T keeps nearly every pair: says so

    @property
    def verdict(self) -> str:
        if self.same:
            return ("the search's best is the paper's point" if self.effect == OVERALL[0]
                    else "one configuration: 0 by construction")
        text = paired.verdict(self.difference, *self.words)
        return f"{text}; {self.kept}" if self.kept else text


def by_point(trials: list[TrialRecord], points: list[dict]) -> dict[int, dict[int, TrialRecord]]:
    """The finished trials of each point, by seed: each trial belongs to the point whose
    configuration it ran."""
    out: dict[int, dict[int, TrialRecord]] = {}
    for t in trials:
        if not t.finished:
            continue
        i = _point_of(t, points)
        if i is not None:
            out.setdefault(i, {})[int(t.params.get("seed", 0))] = t
    return out


def comparison(trials: list[TrialRecord], points: list[dict], arms: list[dict],
               effects=(OVERALL,), metrics=tuple(m for m, _ in METRICS)) -> list[Row]:
    """The comparison's rows: for each split whose cells ran, each of ``effects`` on each of
    ``metrics`` (by default the overall difference on linear test and linear val). Every row
    of a split is over the seeds that all its compared cells finished, so that the difference
    of the means is the mean of the differences and the 2 x 2's rows add up seed by seed."""
    runs = by_point(trials, points)
    rows = []
    for arm in arms:
        # (the paper's T row is the searched one where the two are one point)
        effects_here = [e for e in effects if e[1] in arm and e[2] in arm and not (
            e[1] == "paper" and arm["paper"] == arm["searched"])]
        cells = {arm[c] for e in effects_here for c in e[1:3]}
        for metric in metrics:
            seeds = sorted(set.intersection(*[
                {k for k, t in runs.get(i, {}).items() if metric in t.metrics}
                for i in cells])) if cells else []
            for effect, a, b, *words in effects_here:
                s, p = runs.get(arm[a], {}), runs.get(arm[b], {})
                rows.append(Row(
                    arm["K"], metric, _effect_name(effect, points[arm[a]], points[arm[b]], a),
                    Stat.of([s[k].metrics[metric] for k in seeds]),
                    Stat.of([p[k].metrics[metric] for k in seeds]),
                    Stat.of([s[k].metrics[metric] - p[k].metrics[metric] for k in seeds]),
                    arm[a] == arm[b], points[arm[a]], points[arm[b]], tuple(words),
                    _no_T_in_all_but_name(points[arm[a]], [s[k] for k in seeds if k in s])
                    if b.endswith("_no_T") else ""))
    return rows


def _effect_name(effect: str, first: dict, second: dict, a: str) -> str:
    """The row's name; the no-threshold row names every value it moves where the search moved
    more than tau (its other searched values move with it)."""
    if a != "searched_no_T" or first == second:
        return effect
    moved = [k for k in first if k != "epochs" and first.get(k) != second.get(k)]
    if moved in ([], ["tau"]):
        return effect
    return f"searched {', '.join(moved)} vs paper's, no threshold"


def attribution(trials: list[TrialRecord], points: list[dict], arms: list[dict],
                metric: str = "linear_test_acc") -> list[Row]:
    """The 2 x 2's differences on ``metric``: overall, T at each tau, tau without T."""
    return comparison(trials, points, arms, EFFECTS, (metric,))


def kept_range(trials) -> tuple[float, float, float, float] | None:
    """The lowest and highest share of positive, then negative, pairs kept at the last epoch,
    over every block and trial (the trials' ``kept_pos_block{k}``, ``kept_neg_block{k}``)."""
    values = {kind: [v for t in trials for k, v in t.metrics.items()
                     if k.startswith(f"kept_{kind}_block")] for kind in ("pos", "neg")}
    if not values["pos"] or not values["neg"]:
        return None
    return min(values["pos"]), max(values["pos"]), min(values["neg"]), max(values["neg"])


def _no_T_in_all_but_name(config: dict, trials) -> str:
    """Where a threshold keeps nearly every pair of both kinds at every block at the last
    epoch: the words that say so, from the recorded kept ratios."""
    kept = kept_range(list(trials))
    if config.get("threshold") is None or kept is None or min(kept[0], kept[2]) < NEARLY_ALL:
        return ""
    return (f"T={num(config['threshold'])} keeps {share_text(kept[:2])} of positive and "
            f"{share_text(kept[2:])} of negative pairs: no threshold in all but name")


def share_text(low_high) -> str:
    low, high = (round(100 * v) for v in low_high)
    return f"{low}%" if low == high else f"{low}-{high}%"


def cell_values(trials: list[TrialRecord], points: list[dict], arms: list[dict],
                metric: str = "linear_test_acc") -> dict[int, dict[str, dict[int, float]]]:
    """Each split's four cells, each ``{seed: value}`` (the figure's dots), by cell label
    (``T=0.3 tau=0.5``)."""
    runs = by_point(trials, points)
    out: dict[int, dict[str, dict[int, float]]] = {}
    for arm in arms:
        cells, drawn = {}, set()
        for cell in CELLS:
            if cell in arm and arm[cell] not in drawn:  # a configuration once
                drawn.add(arm[cell])
                cells[config_label(points[arm[cell]])] = {
                    seed: t.metrics[metric] for seed, t in runs.get(arm[cell], {}).items()
                    if metric in t.metrics}
        if cells:
            out[arm["K"]] = cells
    return out


def _point_of(t: TrialRecord, points: list[dict]) -> int | None:
    for i, point in enumerate(points):
        if all(t.params.get(k) == parse_param(str(v)) for k, v in point.items()
               if k not in ("epochs", "data_dir")):
            return i
    return None


def config_label(config: dict) -> str:
    """``T=0.3 tau=0.5``; ``T=none`` for Eq. (1)."""
    T = config.get("threshold")
    return f"T={'none' if T is None else num(T)} tau={num(config.get('tau'))}"
