"""The searched T against the paper's T, over seeds: the comparison a researcher wants after a
search (``python -m study.tune --compare STUDY --seeds N``).

For each split K of the searched study, two arms are re-run to their end with the same N seeds:
the search's best configuration at that K (chosen on validation accuracy) and the paper's point
at that K (the same configuration with the paper's searched values: its T and tau). Each arm is
reported as mean +- sample std over its seeds, and the difference (searched - paper) as the mean
+- std of the per-seed differences (the arms share their seeds: a paired comparison) with its
95% t-interval. Where the search's best is the paper's point, the two arms are one configuration
trained once: the difference is 0 by construction, and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.records.formatting import Stat, Table, num, pct_spread, signed
from study.records.params import parse_param
from study.records.plan import Plan, study_splits
from study.records.store import Store
from study.records.trials import TrialRecord, best_per_split, read_trials, split_counts
from study.spaces.strata import stratum_points
from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.paper import paper_point

METRICS = (("linear_test_acc", "linear test"), ("linear_val_acc", "linear val"))


def compare_points(store: Store, dataset: str, searched: str, space) -> tuple[list, list]:
    """The points to re-run (configurations, each once) and the arms: for each split K of the
    searched study, ``{"K", "searched": i, "paper": j, "trials", "finished"}`` with indexes
    into the points."""
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
        for name, c in (("searched", config), ("paper", paper_config)):
            if c not in points:
                points.append(c)
            arm[name] = points.index(c)
        arms.append(arm)
    return points, arms


@dataclass
class Row:
    """One split's comparison on one metric."""

    K: int
    metric: str
    searched: Stat | None
    paper: Stat | None
    difference: Stat | None  # searched - paper, per seed
    same_point: bool  # the search's best is the paper's point
    searched_config: dict
    paper_config: dict

    @property
    def verdict(self) -> str:
        if self.same_point:
            return "the search's best is the paper's point"
        if self.difference is None:
            return "no seed finished in both arms"
        ci = self.difference.interval()
        if ci is None:
            return "one seed: no spread to judge by"
        if ci[0] <= 0 <= ci[1]:
            return "no difference within the seeds' spread"
        return "searched better" if self.difference.mean > 0 else "paper's T better"


def comparison(trials: list[TrialRecord], points: list[dict], arms: list[dict]) -> list[Row]:
    """The comparison's rows, two per split (linear test, linear val), from the re-run's
    trials: each trial belongs to the point whose configuration it ran."""
    by_point: dict[int, dict[int, TrialRecord]] = {}
    for t in trials:
        if not t.finished:
            continue
        i = _point_of(t, points)
        if i is not None:
            by_point.setdefault(i, {})[int(t.params.get("seed", 0))] = t
    rows = []
    for arm in arms:
        if "searched" not in arm:
            continue
        s, p = by_point.get(arm["searched"], {}), by_point.get(arm["paper"], {})
        for metric, _ in METRICS:
            # Both arms over the seeds they share, so that the difference of the means is the
            # mean of the differences.
            seeds = [k for k in sorted(set(s) & set(p))
                     if metric in s[k].metrics and metric in p[k].metrics]
            rows.append(Row(
                arm["K"], metric,
                Stat.of([s[k].metrics[metric] for k in seeds]),
                Stat.of([p[k].metrics[metric] for k in seeds]),
                Stat.of([s[k].metrics[metric] - p[k].metrics[metric] for k in seeds]),
                arm["searched"] == arm["paper"], points[arm["searched"]], points[arm["paper"]]))
    return rows


def _point_of(t: TrialRecord, points: list[dict]) -> int | None:
    for i, point in enumerate(points):
        if all(t.params.get(k) == parse_param(str(v)) for k, v in point.items()
               if k not in ("epochs", "data_dir")):
            return i
    return None


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The rows as table cells: K, metric, the two configurations' T and tau, both arms, the
    difference, the verdict."""
    names = dict(METRICS)
    return [[str(r.K), names[r.metric],
             f"T={num(r.searched_config.get('threshold'))} "
             f"tau={num(r.searched_config.get('tau'))}",
             f"T={num(r.paper_config.get('threshold'))} tau={num(r.paper_config.get('tau'))}",
             pct_spread(r.searched), pct_spread(r.paper), signed(r.difference),
             str(r.difference.n if r.difference else 0), r.verdict] for r in rows]


HEADERS = ["K", "metric", "searched", "paper", "searched %", "paper %",
           "difference (pts) [95% CI]", "seeds", "verdict"]

def comparison_table(trials: list[TrialRecord], plan: Plan) -> Table:
    """The comparison of a ``--compare`` study from its trials and its plan, for the terminal
    and the report alike."""
    rows = comparison(trials, plan.points, plan.arms)
    missing = [f"K={a['K']}: no finished trial in {plan.compare} ({a['trials']} ran), "
               f"nothing to compare" for a in plan.arms if "searched" not in a]
    return Table(f"Searched best against the paper's T, {plan.seeds} seed(s) each "
                 f"(search: {plan.compare}; difference = searched - paper, paired by seed)",
                 HEADERS, table_rows(rows), "; ".join(missing))
