"""Strata: each split its own share of the trials, its own Optuna study and its own ASHA
brackets; and the searched T against the paper's T over seeds (study.records.comparison)."""

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.engine.scheduler import StratifiedASHA
from study.engine.search import StratifiedSearch, StudySearch
from study.engine.tuner import optuna_space
from study.records.compare_tables import comparison_table
from study.records.comparison import comparison
from study.records.plan import Plan
from study.records.trials import TrialRecord
from study.spaces.loading import load_space, space_path
from study.spaces.strata import (
    bracket_keys,
    optuna_study_name,
    shares,
    strata_of,
    stratum_points,
)


def searcher(storage: str, strata: list[dict], trials: int, points: list[dict]):
    space = load_space(space_path("digits"))
    distributions = optuna_space(space)
    distributions.pop("K")
    children = [StudySearch(space=distributions, metric="knn_val_acc", mode="max",
                            points_to_evaluate=stratum_points(points, s) or None,
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


def test_a_trial_that_ended_after_the_last_save_is_told_again_without_a_crash(tmp_path):
    """A driver killed after a trial ended in Optuna but before Ray saved that: on --resume Ray
    continues the trial, which reports and completes again; Optuna holds it as ended."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = searcher(storage, [{"K": 2}], 2, [])
    s.suggest("t0")
    s.save(str(tmp_path / "searcher.pkl"))  # Ray's last save: t0 running
    s.on_trial_complete("t0", {"knn_val_acc": 0.6, "trial_finished": True})

    resumed = searcher(storage, [{"K": 2}], 2, [])
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("t0", {"knn_val_acc": 0.6, "training_iteration": 1, "epoch": 1})
    resumed.on_trial_complete("t0", {"knn_val_acc": 0.6, "trial_finished": True})
    t0, = optuna.load_study(study_name="digits/s/K=2", storage=storage).trials
    assert t0.state == optuna.trial.TrialState.COMPLETE and t0.value == 0.6


def _trial(tid: str, K: int):
    return SimpleNamespace(trial_id=tid, config={"K": K, "head": "paper", "threshold": 0.1,
                                                 "tau": 0.5})


def _decisions(scheduler) -> dict[str, str]:
    """Made-up results at the first rung (epoch 1): K = 1 far ahead, and the K = 8 trial ``c``
    leading its own split, after ``e`` of K = 8 posted below it."""
    results = [("a", 1, 0.90), ("b", 1, 0.88), ("e", 8, 0.45), ("c", 8, 0.55), ("d", 8, 0.40)]
    trials = {tid: _trial(tid, K) for tid, K, _ in results}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    return {tid: scheduler.on_trial_result(None, trials[tid], {"epoch": 1, "knn_val_acc": v})
            for tid, _, v in results}


def test_asha_compares_a_trial_only_with_its_own_split():
    asha = dict(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=4, grace_period=1)
    decisions = _decisions(StratifiedASHA(["K"], **asha))
    # Above the one K = 8 result before it, far below K = 1's: it goes on.
    assert decisions["c"] == TrialScheduler.CONTINUE
    assert decisions["d"] == TrialScheduler.STOP  # below the leader of its own split
    # Plain ASHA stops the K = 8 leader for being deep: what the strata are there to prevent.
    assert _decisions(ASHAScheduler(**asha))["c"] == TrialScheduler.STOP


def test_a_fronts_trial_is_stopped_only_against_trials_of_its_own_cost():
    """A multi-objective search ranks on kNN accuracy: one bracket for every K and head would
    stop the cheap deep trials for being deep, before they reach the front."""
    from study.engine.tuner import search_scheduler

    pareto = load_space(space_path("digits").with_name("digits-pareto.yaml"))
    stages = load_space(space_path("digits").with_name("digits-stages.yaml"))
    assert bracket_keys(pareto.search, pareto.objectives) == ["K", "head"]
    assert bracket_keys(stages.search, stages.objectives) == ["K", "stages"]
    digits = load_space(space_path("digits"))
    assert bracket_keys(digits.search, digits.objectives) == ["K"]  # its strata
    plan = Plan(study="f", dataset="digits", space_file="", budget="smoke", trials=6, epochs=4,
                concurrency=2, gpus_per_trial=0, cpus_per_trial=1, data_dir="", seed=0,
                objectives=[[o.metric, o.mode] for o in pareto.objectives])
    scheduler = search_scheduler(plan, pareto)
    assert isinstance(scheduler, StratifiedASHA) and scheduler.keys == ["K", "head"]
    # The same made-up results as the per-K brackets' test, every trial with the paper's head.
    decisions = _decisions(scheduler)
    assert decisions["c"] == TrialScheduler.CONTINUE and decisions["d"] == TrialScheduler.STOP
    # One K, two heads: the costly MLP head far ahead; the paper's small head is compared with
    # its own kind only, so its leader goes on where brackets per K alone would stop it.
    results = [("m1", "mlp", 0.90), ("m2", "mlp", 0.88), ("p1", "paper", 0.50),
               ("p2", "paper", 0.45)]

    def heads(scheduler) -> dict[str, str]:
        trials = {tid: SimpleNamespace(trial_id=tid, config={"K": 8, "head": head})
                  for tid, head, _ in results}
        for t in trials.values():
            scheduler.on_trial_add(None, t)
        return {tid: scheduler.on_trial_result(None, trials[tid], {"epoch": 1, "knn_val_acc": v})
                for tid, _, v in results}

    per_cost = heads(search_scheduler(plan, pareto))
    assert per_cost["p1"] == TrialScheduler.CONTINUE and per_cost["p2"] == TrialScheduler.STOP
    asha = dict(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=4, grace_period=1)
    assert heads(StratifiedASHA(["K"], **asha))["p1"] == TrialScheduler.STOP


def test_a_front_saved_with_one_bracket_set_resumes_with_brackets_per_cost(capsys):
    from study.engine.scheduler import StudyASHA
    from study.engine.tuner import _brackets_as_now

    pareto = load_space(space_path("digits").with_name("digits-pareto.yaml"))
    plan = Plan(study="f", dataset="digits", space_file="", budget="smoke", trials=6, epochs=4,
                concurrency=2, gpus_per_trial=0, cpus_per_trial=1, data_dir="", seed=0,
                objectives=[[o.metric, o.mode] for o in pareto.objectives])
    asha = dict(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=4, grace_period=1)
    config = SimpleNamespace(scheduler=StudyASHA(**asha))
    _brackets_as_now(SimpleNamespace(_local_tuner=SimpleNamespace(_tune_config=config)), plan,
                     pareto)
    assert isinstance(config.scheduler, StratifiedASHA) and config.scheduler.keys == ["K", "head"]
    assert "ASHA: brackets per K, head from now on (the study was saved with brackets per " \
           "study)" in capsys.readouterr().err
    kept = config.scheduler
    _brackets_as_now(SimpleNamespace(_local_tuner=SimpleNamespace(_tune_config=config)), plan,
                     pareto)
    assert config.scheduler is kept  # as it should be: left alone


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
    assert (test.first.mean, test.first.std) == pytest.approx((0.82, 0.02))
    assert (test.second.mean, test.second.std) == pytest.approx((0.81, 0.026458), abs=1e-6)
    assert (test.difference.mean, test.difference.std, test.difference.n) == pytest.approx(
        (0.01, 0.01, 3))
    assert test.difference.interval() == pytest.approx((0.01 - 0.024841, 0.01 + 0.024841),
                                                       abs=1e-6)
    # 3 seeds at a paired spread of 1 point detect (80% power) only 3.26 points or more; 1 point
    # would need 10 seeds: "no difference" here is not "none".
    assert test.verdict == "too few seeds to tell"
    val = rows[4, "linear_val_acc"]  # 0.10 0.11 0.12: above zero beyond the spread
    assert val.difference.mean == pytest.approx(0.11) and val.verdict == "searched better"
    same = rows[8, "linear_test_acc"]
    assert same.difference.mean == 0 and same.verdict == "the search's best is the paper's point"

    plan = Plan(study="s-vs-paper", dataset="digits", space_file="", budget="smoke", trials=6,
                epochs=0, concurrency=1, gpus_per_trial=0, cpus_per_trial=1, data_dir="",
                seed=1, points=POINTS, arms=ARMS, compare="search", seeds=3)
    table = comparison_table(trials, plan)
    assert table.rows[0] == ["4", "linear test", "T=0.1 tau=0.5", "T=0.3 tau=0.5",
                             "82.00 ± 2.00", "81.00 ± 2.65", "+1.00 ± 1.00 [-1.48, +3.48]", "3",
                             "±3.26", "10", "too few seeds to tell"]
    assert table.rows[2][-3:] == ["-", "-", "the search's best is the paper's point"]
    assert table.note == "K=16: no finished trial in search (6 ran), nothing to compare"


def test_a_stratum_whose_searcher_has_nothing_does_not_hold_the_others_back(tmp_path):
    s = searcher(f"sqlite:///{tmp_path / 'optuna.db'}", [{"K": 2}, {"K": 4}], 4, [])
    done, busy = SimpleNamespace(suggest=lambda t: "FINISHED"), SimpleNamespace(
        suggest=lambda t: None)
    s.searchers[0] = busy
    assert s.suggest("t0")["K"] == 4  # K = 2 waits; K = 4 goes on
    s.searchers[1] = done
    assert s.suggest("t1") is None  # K = 4 has ended; K = 2 may still have something
    assert s.shares == [2, 1]
    s.searchers[0] = done
    assert s.suggest("t2") == StratifiedSearch.FINISHED


@pytest.fixture
def searched(tmp_path):
    """A finished stratified search of digits in a temporary store (made-up runs): K = 2's best
    is a searched point, K = 4's best is the paper's point, K = 8 has no finished trial and no
    trial ran at K = 1."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from study.records.store import Store

    store = Store.at(tmp_path / "mlruns")
    store.save_study("s", Plan(
        study="s", dataset="digits", space_file=str(space_path("digits")), budget="smoke",
        trials=4, epochs=3, concurrency=2, gpus_per_trial=0, cpus_per_trial=1, data_dir="/data",
        seed=0, strata=[{"K": 1}, {"K": 2}, {"K": 4}, {"K": 8}], shares=[1, 1, 1, 1]).__dict__)
    client = MlflowClient(store.tracking_uri)
    experiment = store.experiment_id("digits")
    for tid, K, T, tau, val, tag in [("a", 2, 0.1, 0.4, 0.80, None), ("b", 2, 0.0, 0.5, 0.70, None),
                                     ("c", 4, 0.0, 0.5, 0.90, None),
                                     ("d", 8, 0.0, 0.5, None, "early_stopped")]:
        run = client.create_run(experiment, tags={"study": "s", "trial_id": tid,
                                                  **({tag: "true"} if tag else {})})
        params = dict(dataset="digits", arch="resnet18", width=0.25, K=K, threshold=T, tau=tau,
                      seed=0, epochs=3, data_dir="/data")
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                         metrics=[Metric("linear_val_acc", val, 0, 3)] if val else [])
        client.set_terminated(run.info.run_id, "KILLED" if tag else "FINISHED")
    return store


def test_compare_points_pair_each_splits_best_with_the_papers_point(searched):
    from study.records.comparison import compare_points

    points, arms = compare_points(searched, "digits", "s", load_space(space_path("digits")))
    base = {"dataset": "digits", "arch": "resnet18", "width": 0.25, "epochs": 3}
    assert points == [{**base, "K": 2, "threshold": 0.1, "tau": 0.4},
                      {**base, "K": 2, "threshold": 0.0, "tau": 0.5},  # the paper's T and tau
                      {**base, "K": 2, "threshold": None, "tau": 0.4},  # Eq. (1) at each tau
                      {**base, "K": 2, "threshold": None, "tau": 0.5},
                      {**base, "K": 4, "threshold": 0.0, "tau": 0.5},
                      {**base, "K": 4, "threshold": None, "tau": 0.5}]
    assert arms == [{"K": 1, "trials": 0, "finished": 0},
                    {"K": 2, "trials": 2, "finished": 2, "searched": 0, "paper": 1,
                     "searched_no_T": 2, "paper_no_T": 3},
                    {"K": 4, "trials": 1, "finished": 1, "searched": 4, "paper": 4,
                     "searched_no_T": 5, "paper_no_T": 5},
                    {"K": 8, "trials": 1, "finished": 0}]


def test_a_comparison_runs_on_fresh_seeds_never_the_searchs_own(searched):
    from study.engine.planning import new_plan
    from study.engine.planning import study_flags as parse_args
    from trainables.errors import ConfigError

    args = ["--dataset", "digits", "--compare", "s", "--seeds", "2", "--store",
            str(searched.root)]
    plan = new_plan(searched, parse_args(args))
    # 6 configurations (K = 2's four cells; K = 4's best is the paper's point: two) x 2 seeds
    assert (plan.kind, plan.study, plan.seed, plan.trials) == ("compare", "s-vs-paper", 1, 12)
    assert (plan.budget, plan.data_dir, len(plan.arms)) == ("smoke", "/data", 4)
    with pytest.raises(ConfigError, match="re-runs seed 0, the search's own"):
        new_plan(searched, parse_args([*args, "--seed", "0"]))
    with pytest.raises(ConfigError, match="--trials-per-K shares a search's trials"):
        new_plan(searched, parse_args([*args, "--trials-per-K", "2"]))


def test_the_comparison_shows_T_to_3_digits_whether_a_number_or_mlflow_text():
    from study.records.formatting import num

    assert num(0.7866811582065296) == num("0.7866811582065296") == "0.787"
    assert num("0.5") == "0.5" and num(None) == "None" and num("None") == "None"
