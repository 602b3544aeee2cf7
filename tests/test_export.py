"""Selection: the export follows the validation split, never the test set."""

import pytest
import yaml
from conftest import save_plan
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study.export import export, load_export, main
from study.records.store import Store
from trainables.errors import ConfigError

# (trial, K, T, tau, linear val, linear test, kNN val, tag): validation and test disagree.
TRIALS = [
    ("a", 2, 0.1, 0.5, 0.80, 0.70, 0.70, None),
    ("b", 2, 0.2, 0.5, 0.75, 0.90, 0.90, None),  # best test of K = 2, worse validation
    ("c", 4, 0.3, 0.4, 0.85, 0.60, 0.70, None),  # best validation overall
    ("d", 4, 0.4, 0.4, 0.60, 0.95, 0.95, None),  # best test overall
    ("e", 4, 0.5, 0.4, 0.85, 0.99, 0.50, None),  # ties c on linear val, loses on kNN val
    ("f", 8, 0.6, 0.3, None, None, 0.99, "early_stopped"),
    ("g", 8, 0.7, 0.3, None, None, None, "diverged"),
]


@pytest.fixture
def store(tmp_path):
    store = Store.at(tmp_path / "mlruns")
    client = MlflowClient(store.tracking_uri)
    experiment = store.experiment_id("digits")
    for trial, K, T, tau, val, test, knn, tag in TRIALS:
        tags = {"study": "s", "trial_id": trial, **({tag: "true"} if tag else {})}
        run = client.create_run(experiment, tags=tags).info.run_id
        params = dict(dataset="digits", arch="resnet18", width=0.25, K=K, threshold=T, tau=tau,
                      seed=0, epochs=3)
        metrics = dict(linear_val_acc=val, linear_test_acc=test, knn_val_acc=knn)
        client.log_batch(run, params=[Param(k, str(v)) for k, v in params.items()],
                         metrics=[Metric(k, v, 0, 1) for k, v in metrics.items()
                                  if v is not None])
        # Each run ends as the tracking callback ends it.
        client.set_terminated(run, ENDS.get(tag, "FINISHED"))
    return store


ENDS = {"early_stopped": "KILLED", "diverged": "FAILED"}


def test_export_ranks_by_validation_overall_and_per_K(store):
    data = export(store, "digits", "s")
    assert data["best"]["trial_id"] == "c"  # not d (best test), not e (tie, worse kNN)
    assert {K: e["trial_id"] for K, e in data["per_K"].items()} == {2: "a", 4: "c"}
    assert data["trials"] == {"total": 7, "finished": 5, "stopped_early": 1, "diverged": 1}
    assert data["best"]["config"]["threshold"] == 0.3 and data["best"]["config"]["tau"] == 0.4
    assert data["best"]["linear_test_acc"] == 0.60  # reported as it is


def test_export_command_writes_what_train_reads(store, tmp_path, capsys):
    out = tmp_path / "best.yaml"
    assert main(["--dataset", "digits", "--study", "s", "--store", str(store.root),
                 "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["best"]["trial_id"] == "c"
    assert load_export(out)["threshold"] == 0.3
    assert load_export(out, K=2)["threshold"] == 0.1
    with pytest.raises(ConfigError, match="has no entry for K=8; it has K in 2, 4"):
        load_export(out, K=8)
    assert "K=2: T=0.1" in capsys.readouterr().err


def test_a_study_with_nothing_finished_cannot_be_exported(store):
    client = MlflowClient(store.tracking_uri)
    run = client.create_run(store.experiment_id("digits"),
                            tags={"study": "empty", "trial_id": "x", "early_stopped": "true"})
    client.log_batch(run.info.run_id, params=[Param("K", "2")])
    with pytest.raises(ConfigError, match="study 'empty' has no finished trial"):
        export(store, "digits", "empty")


def test_export_lists_every_split_of_the_study(store, capsys):
    """A split with no finished trial gets an explicit line, never silence."""
    data = export(store, "digits", "s")
    assert {K: (e["finished"], e["trials"]) for K, e in data["per_K"].items()} == {
        2: (2, 2), 4: (3, 3)}
    assert data["K_without_finished_trial"] == {8: {
        "trials": 2, "finished": 0, "stopped_early": 1, "diverged": 1,
        "why": "2 trial(s), none finished: 1 stopped early, 1 diverged"}}
    # The study's record names its splits: one where no trial ran is listed too.
    save_plan(store, strata=[{"K": 1}, {"K": 2}, {"K": 4}, {"K": 8}])
    assert export(store, "digits", "s")["K_without_finished_trial"][1]["why"] == \
        "no trial ran at this split"
    assert main(["--dataset", "digits", "--study", "s", "--store", str(store.root),
                 "--out", str(store.root / "best.yaml")]) == 0
    err = capsys.readouterr().err
    assert "K=1: no best T: no trial ran at this split" in err
    assert "K=2: T=0.1 tau=0.5  val 0.8000 test 0.7000  (best of 2 finished, 2 trial(s))" in err
    assert "K=8: no best T: 2 trial(s), none finished: 1 stopped early, 1 diverged" in err
