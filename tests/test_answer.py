"""One rule for the answer: every reader of a study (export, the report, the end-of-study table,
``--compare`` and the Pareto front) names the same best trial per split and the same counts, and
never a lost, stopped-early or diverged run, whatever linear evaluation such a run carries.

A made-up study in a real MLflow store (no Ray, no training): at each of two splits, two trials
that finished and, above them on validation accuracy and below them in cost, a lost run, an
early-stopped run and a diverged run. At K = 2 those three end as the study leaves them (KILLED,
KILLED, FAILED); at K = 4 MLflow holds them FINISHED: a status alone never makes a trial count.
"""

import re

import pytest
from mlflow.tracking import MlflowClient
from test_records import _run as make_run

from study.engine.summary import print_table
from study.records import trials as records
from study.records.comparison import compare_points
from study.records.exported import export
from study.records.pareto import finished_points, front
from study.records.plan import Plan
from study.records.store import Store
from study.records.trials import best_per_split, read_trials, study_rows
from study.report import data, tables
from study.spaces.loading import load_space, space_path

OBJECTIVES = [[records.LINEAR_VAL, "max"], ["max_block_head_macs", "min"]]
ANSWER = {2: "a", 4: "c"}  # each split's best finished trial on validation accuracy
ROGUES = {"lost2", "early2", "diverged2", "lost4", "early4", "diverged4"}
# Per split: trials (the lost run left out), finished, stopped early, diverged; one lost run.
COUNTS = (4, 2, 1, 1)

# (trial, K, T, linear val, cost, MLflow status, tag)
RUNS = [
    ("a", 2, 0.1, 0.80, 3e8, "FINISHED", None),
    ("b", 2, 0.2, 0.75, 3e8, "FINISHED", None),
    ("c", 4, 0.3, 0.70, 2e8, "FINISHED", None),
    ("d", 4, 0.4, 0.65, 2e8, "FINISHED", None),
    ("lost2", 2, 0.5, 0.99, 1e6, "KILLED", records.LOST),
    ("early2", 2, 0.6, 0.98, 1e6, "KILLED", records.EARLY_STOPPED),
    ("diverged2", 2, 0.7, 0.97, 1e6, "FAILED", records.DIVERGED),
    ("lost4", 4, -0.5, 0.99, 1e6, "FINISHED", records.LOST),
    ("early4", 4, -0.6, 0.98, 1e6, "FINISHED", records.EARLY_STOPPED),
    ("diverged4", 4, -0.7, 0.97, 1e6, "FINISHED", records.DIVERGED),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The study, read by every test and changed by none."""
    store = Store.at(tmp_path_factory.mktemp("answer") / "mlruns")
    client = MlflowClient(store.tracking_uri)
    experiment = store.experiment_id("digits")
    parent = client.create_run(experiment, tags={records.STUDY: "s"}).info.run_id
    Plan(study="s", dataset="digits", space_file=str(space_path("digits")), budget="smoke",
         trials=10, epochs=2, concurrency=2, gpus_per_trial=0, cpus_per_trial=1,
         data_dir="/data", seed=0, parent_run_id=parent, experiment_id=experiment,
         objectives=OBJECTIVES, strata=[{"K": 2}, {"K": 4}], shares=[5, 5]).save(store)
    for tid, K, T, val, cost, status, tag in RUNS:
        params = dict(dataset="digits", arch="resnet18", width=0.25, K=K, threshold=T, tau=0.5,
                      seed=0, epochs=2)
        make_run(client, experiment, tid, status=status,
                 tags={tag: "true"} if tag else None, params={k: str(v) for k, v in
                                                                params.items()},
                 metrics={records.LINEAR_VAL: val, records.LINEAR_TEST: val - 0.1,
                          "max_block_head_macs": cost})
    return store


def test_the_rule_itself(store):
    trials = read_trials(store, "digits", "s")
    assert {K: t.trial_id for K, t in best_per_split(trials).items()} == ANSWER
    assert {t.trial_id for t in trials if t.finished} == {"a", "b", "c", "d"}
    counts = records.split_counts(trials)
    assert {K: (c.trials, c.finished, c.stopped_early, c.diverged, c.lost)
            for K, c in counts.items()} == {2: (*COUNTS, 1), 4: (*COUNTS, 1)}


def test_export_names_the_answer_and_counts(store):
    out = export(store, "digits", "s")
    assert {K: e["trial_id"] for K, e in out["per_K"].items()} == ANSWER
    assert out["best"]["trial_id"] == "a"
    assert {K: (e["trials"], e["finished"], e["stopped_early"], e["diverged"],
                e["lost_runs_left_out"]) for K, e in out["per_K"].items()} == {
        2: (*COUNTS, 1), 4: (*COUNTS, 1)}
    assert out["trials"] == {"total": 8, "finished": 4, "stopped_early": 2, "diverged": 2,
                             "lost_runs_left_out": 2}
    assert {e["trial_id"] for e in out["pareto"]} == set(ANSWER.values())


def test_the_report_names_the_answer_and_counts(store):
    record = data.gather_study(store, "s")
    assert {t.K: t.trial_id for t in data.best_per_K(record)} == ANSWER
    table = tables.best_per_K_table(record)
    trial, done = table.headers.index("trial"), table.headers.index("finished/trials")
    assert {int(r[0]): (r[trial], r[done]) for r in table.rows} == {
        K: (tid, f"{COUNTS[1]}/{COUNTS[0]}") for K, tid in ANSWER.items()}
    assert table.note == "K=2: 1 lost run(s) left out; K=4: 1 lost run(s) left out"
    figures = data.compared_trials(record)  # the paper's figures: each split's best
    assert sorted(t.trial_id for t in figures.values()) == sorted(ANSWER.values())
    own = data.pareto_front(record)
    assert {p.trial_id for p in own.members} == set(ANSWER.values())
    assert ROGUES.isdisjoint(p.trial_id for p in own.points)


def test_the_end_of_study_table_names_the_answer_first_and_counts(store, capsys):
    print_table(study_rows(store, "digits", "s"), "s")
    lines = capsys.readouterr().err.splitlines()
    assert "s: 8 trial run(s) (2 lost run(s) left out), best first" in "\n".join(lines)
    heads = {int(m[1]): i for i, line in enumerate(lines) if (m := re.match(r"-- K=(\d+)", line))}
    for K, i in heads.items():
        assert lines[i].startswith(f"-- K={K}: 4 trial(s), 2 finished, 1 stopped early, "
                                   f"1 diverged (1 lost run(s) left out)")
    assert {K: lines[i + 1].split()[0] for K, i in heads.items()} == ANSWER
    shown = {line.split()[0] for line in lines if line and line[0].isalpha()}
    assert not shown & {"lost2", "lost4"}  # a lost run is none of the study's trials
    # A multi-objective study's table: the front first, marked.
    print_table(study_rows(store, "digits", "s"), "s", objectives=OBJECTIVES)
    marked = [line.split()[0] for line in capsys.readouterr().err.splitlines()
              if line.endswith(", front")]
    assert sorted(marked) == sorted(ANSWER.values())


def test_compare_reruns_the_answer_of_each_split(store):
    points, arms = compare_points(store, "digits", "s", load_space(space_path("digits")))
    T = {t: T for t, _, T, *_ in RUNS}
    assert {a["K"]: points[a["searched"]]["threshold"] for a in arms} == {
        K: T[tid] for K, tid in ANSWER.items()}
    assert {a["K"]: (a["trials"], a["finished"]) for a in arms} == {
        K: COUNTS[:2] for K in ANSWER}


def test_the_pareto_front_holds_only_the_answer(store):
    points = finished_points(read_trials(store, "digits", "s"), OBJECTIVES)
    assert ROGUES.isdisjoint(p.trial_id for p in points)
    members = front(points, OBJECTIVES)
    assert {p.trial.K: p.trial_id for p in members} == ANSWER
