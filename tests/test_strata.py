"""Strata: each split its own share of the trials, its own Optuna study and its own ASHA
brackets; and the searched T against the paper's T over seeds (study.compare)."""

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.compare import comparison, comparison_table
from study.records import TrialRecord
from study.search import StratifiedASHA, StratifiedSearch, StudySearch
from study.space import load_space, space_path
from study.strata import optuna_study_name, paper_points, shares, strata_of
from study.tuner import optuna_space


def searcher(storage: str, strata: list[dict], trials: int, points: list[dict]):
    space = load_space(space_path("digits"))
    distributions = optuna_space(space)
    distributions.pop("K")
    children = [StudySearch(space=distributions, metric="knn_val_acc", mode="max",
                            points_to_evaluate=paper_points(points, s) or None,
                            sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
                            study_name=optuna_study_name("digits", "s", s),
                            storage=optuna.storages.RDBStorage(storage))
                for s in strata]
    return StratifiedSearch(children, strata, shares(trials, len(strata)), "knn_val_acc", "max")


def test_strata_of_a_space_and_their_shares():
    space = load_space(space_path("digits"))
    assert strata_of(space.search, space.objectives) == [{"K": 1}, {"K": 2}, {"K": 4}, {"K": 8}]
    assert strata_of(space.search, space.objectives, [4, 8]) == [{"K": 4}, {"K": 8}]
    pareto = load_space(space_path("digits").with_name("digits-pareto.yaml"))
    assert strata_of(pareto.search, pareto.objectives) == []  # the trade-off is the point
    assert shares(8, 2) == [4, 4] and shares(7, 3) == [3, 2, 2]


def test_eight_trials_over_two_splits_run_four_and_four_each_from_the_papers_point(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = searcher(storage, [{"K": 2}, {"K": 4}], 8, [{"threshold": 0.0, "tau": 0.5, "K": 4}])
    configs = [s.suggest(f"t{i}") for i in range(8)]
    assert s.suggest("t8") == StratifiedSearch.FINISHED
    assert [c["K"] for c in configs] == [2, 4] * 4
    # The paper's point first in every split (the space names it at K = 4; K = 2 gets it moved).
    assert configs[0] == {"K": 2, "threshold": 0.0, "tau": 0.5}
    assert configs[1] == {"K": 4, "threshold": 0.0, "tau": 0.5}
    for i in range(8):
        s.on_trial_complete(f"t{i}", {"knn_val_acc": 0.5 + 0.01 * i, "trial_finished": True})
    for K in (2, 4):
        study = optuna.load_study(study_name=f"digits/s/K={K}", storage=storage)
        assert len(study.trials) == 4 and "K" not in study.trials[0].params
        assert [t.value for t in study.trials] == pytest.approx(
            [0.5 + 0.01 * i for i, c in enumerate(configs) if c["K"] == K])


def test_a_resumed_stratified_search_keeps_each_splits_history(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = searcher(storage, [{"K": 2}, {"K": 4}], 6, [{"threshold": 0.0, "tau": 0.5, "K": 4}])
    for i in range(3):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", {"knn_val_acc": 0.6, "trial_finished": True})
    running = s.suggest("t3")  # K = 4's second trial, interrupted
    s.save(str(tmp_path / "searcher.pkl"))

    resumed = searcher(storage, [{"K": 2}, {"K": 4}], 6, [])
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.assigned == [2, 2] and resumed.trial_stratum["t3"] == 1
    resumed.on_trial_result("t3", {"knn_val_acc": 0.7, "training_iteration": 1, "epoch": 1})
    resumed.on_trial_complete("t3", {"knn_val_acc": 0.7, "trial_finished": True})
    more = [resumed.suggest(f"t{i}") for i in (4, 5)]
    assert [c["K"] for c in more] == [2, 4] and resumed.suggest("t6") == "FINISHED"
    k4 = optuna.load_study(study_name="digits/s/K=4", storage=storage).trials
    assert len(k4) == 3 and k4[1].params["threshold"] == running["threshold"]
    assert k4[1].value == 0.7 and k4[0].params == {"threshold": 0.0, "tau": 0.5}


def _trial(tid: str, K: int):
    return SimpleNamespace(trial_id=tid, config={"K": K, "threshold": 0.1, "tau": 0.5})


def _decisions(scheduler) -> dict[str, str]:
    """Made-up results at the first rung (epoch 1): K = 1 far ahead, and the K = 8 trial ``c``
    leading its own split."""
    results = [("a", 1, 0.90), ("b", 1, 0.88), ("c", 8, 0.55), ("d", 8, 0.40)]
    trials = {tid: _trial(tid, K) for tid, K, _ in results}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    return {tid: scheduler.on_trial_result(None, trials[tid], {"epoch": 1, "knn_val_acc": v})
            for tid, _, v in results}


def test_asha_compares_a_trial_only_with_its_own_split():
    asha = dict(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=4, grace_period=1)
    decisions = _decisions(StratifiedASHA(["K"], **asha))
    assert decisions["c"] == TrialScheduler.CONTINUE  # first of K = 8, whatever K = 1 posted
    assert decisions["d"] == TrialScheduler.STOP  # below the leader of its own split
    # Plain ASHA stops the K = 8 leader for being deep: what the strata are there to prevent.
    assert _decisions(ASHAScheduler(**asha))["c"] == TrialScheduler.STOP


def record(tid: str, K: int, T: float, seed: int, test: float, val: float) -> TrialRecord:
    return TrialRecord(
        trial_id=tid, run_id=f"run-{tid}", status="FINISHED",
        params={"K": K, "threshold": T, "tau": 0.5, "seed": seed, "epochs": 8, "width": 0.25},
        metrics={"linear_test_acc": test, "linear_val_acc": val}, tags={}, last_epoch=8)


POINTS = [{"K": 4, "threshold": 0.1, "tau": 0.5, "epochs": 8, "width": 0.25},
          {"K": 4, "threshold": 0.3, "tau": 0.5, "epochs": 8, "width": 0.25},
          {"K": 8, "threshold": 0.3, "tau": 0.5, "epochs": 8, "width": 0.25}]
ARMS = [{"K": 4, "searched": 0, "paper": 1, "trials": 6, "finished": 3},
        {"K": 8, "searched": 2, "paper": 2, "trials": 6, "finished": 2},
        {"K": 16, "trials": 6, "finished": 0}]


def test_seeds_comparison_matches_a_hand_computation():
    trials = [
        record("s0", 4, 0.1, 0, 0.80, 0.70), record("s1", 4, 0.1, 1, 0.82, 0.72),
        record("s2", 4, 0.1, 2, 0.84, 0.74),
        record("p0", 4, 0.3, 0, 0.79, 0.60), record("p1", 4, 0.3, 1, 0.80, 0.61),
        record("p2", 4, 0.3, 2, 0.84, 0.62),
        record("q0", 8, 0.3, 0, 0.70, 0.70), record("q1", 8, 0.3, 1, 0.72, 0.72),
    ]
    rows = {(r.K, r.metric): r for r in comparison(trials, POINTS, ARMS)}
    assert set(rows) == {(4, "linear_test_acc"), (4, "linear_val_acc"), (8, "linear_test_acc"),
                         (8, "linear_val_acc")}
    test = rows[4, "linear_test_acc"]
    # By hand: searched 0.80 0.82 0.84 -> 0.82 +- 0.02; paper 0.79 0.80 0.84 -> 0.81 +- 0.0265;
    # per-seed differences 0.01 0.02 0.00 -> 0.01 +- 0.01, 95% t (2 dof, 4.303): +-0.0248.
    assert (test.searched.mean, test.searched.std) == pytest.approx((0.82, 0.02))
    assert (test.paper.mean, test.paper.std) == pytest.approx((0.81, 0.026458), abs=1e-6)
    assert (test.difference.mean, test.difference.std, test.difference.n) == pytest.approx(
        (0.01, 0.01, 3))
    assert test.difference.interval() == pytest.approx((0.01 - 0.024841, 0.01 + 0.024841),
                                                       abs=1e-6)
    assert test.verdict == "no difference within the seeds' spread"
    val = rows[4, "linear_val_acc"]  # 0.10 0.11 0.12: above zero beyond the spread
    assert val.difference.mean == pytest.approx(0.11) and val.verdict == "searched better"
    same = rows[8, "linear_test_acc"]
    assert same.difference.mean == 0 and same.verdict == "the search's best is the paper's point"

    plan = {"points": POINTS, "arms": ARMS, "compare": "search", "seeds": 3}
    table = comparison_table(trials, plan)
    assert table.rows[0][:7] == ["4", "linear test", "T=0.1 tau=0.5", "T=0.3 tau=0.5",
                                 "82.00 ± 2.00", "81.00 ± 2.65", "+1.00 ± 1.00 [-1.48, +3.48]"]
    assert table.note == "K=16: no finished trial in search (6 ran), nothing to compare"
