"""The one reader of a study's trials, on made-up runs in a temporary MLflow store (no
training, no Ray): states, the last epoch, where the encoder is, paging, the ranking rule and
the Pareto front over the records."""

import math

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from study.records import trials as records
from study.records.pareto import finished_points, front
from study.records.store import Store
from study.records.trials import rank_key, ranked, read_trials


def _run(client, exp, trial_id, status="FINISHED", tags=None, metrics=None, steps=2,
         params=None, study="s"):
    run = client.create_run(exp, tags={records.STUDY: study, records.TRIAL_ID: trial_id,
                                       **(tags or {})}).info.run_id
    for k, v in (params or {"K": "4", "threshold": "0.3", "tau": "0.5", "epochs": "2"}).items():
        client.log_param(run, k, v)
    client.log_batch(run, metrics=[Metric(records.KNN_VAL, 0.5 + e / 10, 0, e)
                                   for e in range(1, steps + 1)])
    for k, v in (metrics or {}).items():
        client.log_metric(run, k, v, step=steps)
    client.set_terminated(run, status)
    return run


@pytest.fixture
def store(tmp_path):
    store = Store.at(tmp_path / "mlruns")
    client = MlflowClient(store.tracking_uri)
    exp = store.experiment_id("digits")
    client.create_run(exp, tags={records.STUDY: "s"})  # the parent: not a trial
    _run(client, exp, "a", metrics={records.LINEAR_VAL: 0.7, records.LINEAR_TEST: 0.6},
         tags={records.ENCODER_STATE: "runs:/a/enc", records.WEIGHTS_KEPT: "true"})
    _run(client, exp, "b", metrics={records.LINEAR_VAL: 0.8},
         tags={records.ENCODER_STATE: "deleted", records.WEIGHTS_KEPT: "false"})
    _run(client, exp, "c", status="KILLED", tags={records.EARLY_STOPPED: "true"}, steps=1)
    d = _run(client, exp, "d", status="FAILED", tags={records.DIVERGED: "true"}, steps=1)
    client.log_metric(d, "epoch_seconds", 1.0, step=2)  # the epoch it diverged in: no kNN
    _run(client, exp, "e", status="KILLED", tags={records.LOST: "killed"}, steps=0)
    _run(client, exp, "f", status="RUNNING", steps=1)
    _run(client, exp, "x", study="other")
    return store


def test_each_trial_is_read_once_with_its_state(store):
    trials = read_trials(store, "digits", "s")
    assert [t.trial_id for t in trials] == ["a", "b", "c", "d", "e", "f"]
    assert [t.state for t in trials] == ["finished", "finished", "stopped early", "diverged",
                                         "lost", "running"]
    a = trials[0]
    assert (a.K, a.threshold, a.params["tau"]) == (4, 0.3, 0.5)  # parsed back from strings
    assert (a.linear_val_acc, a.linear_test_acc) == (0.7, 0.6)
    assert a.epochs == 2 and trials[2].epochs == 1  # a stopped trial: its last epoch logged
    assert trials[3].epochs == 2  # a diverged trial: the epoch it diverged in counts
    assert a.model_uri == "runs:/a/enc" and trials[1].model_uri is None  # weights dropped
    assert read_trials(store, "fmnist", "s") == []


def test_a_large_study_is_read_page_after_page(store, monkeypatch):
    monkeypatch.setattr(records, "SEARCH_PAGE", 2)
    assert len(read_trials(store, "digits", "s")) == 6


def test_the_ranking_rule_puts_linear_first_and_missing_values_last(store):
    trials = read_trials(store, "digits", "s")
    assert [t.trial_id for t in ranked(trials)][:2] == ["b", "a"]
    assert rank_key(trials[3])[0] == -math.inf  # a diverged trial has no linear evaluation
    assert ranked(trials)[-1].trial_id == "e"  # nothing at all: last


def test_the_front_over_records_holds_only_finished_non_dominated_trials(store):
    objectives = [[records.LINEAR_VAL, "max"], ["cost", "min"]]
    client = MlflowClient(store.tracking_uri)
    trials = read_trials(store, "digits", "s")
    # a: worse accuracy but cheaper than b: both on the front.
    client.log_metric(trials[0].run_id, "cost", 1.0)
    client.log_metric(trials[1].run_id, "cost", 2.0)
    trials = read_trials(store, "digits", "s")
    points = finished_points(trials, objectives)
    assert [p.trial_id for p in points] == ["a", "b"]  # stopped, diverged, lost: not points
    assert [p.trial_id for p in front(points, objectives)] == ["a", "b"]
    client.log_metric(trials[1].run_id, "cost", 0.5)  # now b beats a on both
    points = finished_points(read_trials(store, "digits", "s"), objectives)
    assert [p.trial_id for p in front(points, objectives)] == ["b"]


def test_registering_the_best_encoder_never_reopens_its_trial_run(tmp_path, monkeypatch):
    """A driver killed while registering must not leave the best trial's run RUNNING (the
    resumed driver would close it as lost): it stays FINISHED throughout."""
    import mlflow.pytorch
    import torch

    from study.engine.registry import register_best
    from trainables.models import DecoupledResNet
    from trainables.specs import ENCODER_FILE, dataset_spec

    store = Store.at(tmp_path / "mlruns")
    client = MlflowClient(store.tracking_uri)
    spec = dataset_spec("digits")
    run = _run(client, store.experiment_id("digits"), "a",
               params={"dataset": "digits", "arch": "resnet18", "K": "2", "width": "0.25"})
    encoder = DecoupledResNet("resnet18", 2, spec.channels, spec.stem, 0.25).encoder()
    torch.save(encoder.state_dict(), tmp_path / ENCODER_FILE)
    client.log_artifact(run, str(tmp_path / ENCODER_FILE))
    client.set_tag(run, records.ENCODER_STATE, f"runs:/{run}/{ENCODER_FILE}")
    seen = []
    log_model = mlflow.pytorch.log_model

    def watched(*args, **kwargs):
        seen.append(client.get_run(run).info.status)
        info = log_model(*args, **kwargs)
        seen.append(client.get_run(run).info.status)
        return info

    monkeypatch.setattr(mlflow.pytorch, "log_model", watched)
    best, = read_trials(store, "digits", "s")
    register_best(store, best, "s-encoder")
    assert seen == ["FINISHED", "FINISHED"]
    assert client.get_run(run).info.status == "FINISHED"
    version, = client.search_model_versions("name = 's-encoder'")
    assert version.run_id == run


def test_the_store_writes_through_a_write_ahead_log_except_on_a_network_disk(tmp_path,
                                                                               monkeypatch):
    import sqlite3

    from study.records import store as store_module

    def journal(db):
        connection = sqlite3.connect(db)
        try:
            return connection.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            connection.close()

    local = Store.at(tmp_path / "local")
    local.experiment_id("digits")
    assert journal(local.root / "mlflow.db") == "wal"
    # A store on NFS keeps SQLite's rollback journal: WAL needs memory shared by its users.
    monkeypatch.setattr(store_module, "filesystem_type", lambda path: "nfs4")
    remote = Store.at(tmp_path / "remote")
    remote.experiment_id("digits")
    assert journal(remote.root / "mlflow.db") == "delete"


def test_the_file_system_type_is_the_longest_mount_point_above_a_path(tmp_path):
    from pathlib import Path

    from study.records.store import filesystem_type

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/home /home nfs4 rw 0 0\n"
                      "tmpfs /home/me/fast\\040disk tmpfs rw 0 0\n"
                      "/dev/vdb /srv/a ext4 rw 0 0\nserver:/a /srv/a nfs rw 0 0\n")
    assert filesystem_type(Path("/srv/a/mlflow.db"), mounts) == "nfs"  # mounted over the disk
    assert filesystem_type(Path("/home/me/mlruns/mlflow.db"), mounts) == "nfs4"
    assert filesystem_type(Path("/home/me/fast disk/mlflow.db"), mounts) == "tmpfs"
    assert filesystem_type(Path("/srv/mlflow.db"), mounts) == "ext4"
    assert filesystem_type(Path("/srv/mlflow.db"), tmp_path / "no such file") is None


def test_the_paged_read_pauses_the_garbage_collector_and_gives_it_back(store):
    import gc

    class Page(list):
        token = None

    class Client:  # records whether the collector ran while each page was read
        seen: list = []

        def search_runs(self, *args, **kwargs):
            self.seen.append(gc.isenabled())
            return Page()

    assert gc.isenabled()
    records.search_all(Client(), "1", "")
    assert Client.seen == [False] and gc.isenabled()
    gc.disable()
    try:
        records.search_all(Client(), "1", "")
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
    assert len(read_trials(store, "digits", "s")) > 0 and gc.isenabled()


def test_two_drivers_creating_the_data_sets_experiment_at_once_share_it(tmp_path, monkeypatch):
    """The lookup finds nothing, another driver creates the experiment, this one's create
    then meets it: both studies use the one experiment."""
    store = Store.at(tmp_path / "mlruns")
    first = store.experiment_id("digits")
    real = MlflowClient.get_experiment_by_name
    calls = []

    def late_lookup(self, name):
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", late_lookup)
    assert store.experiment_id("digits") == first and len(calls) == 2


def test_a_saved_plan_reads_back_as_it_was_saved(tmp_path):
    """One type, read one way: what a study saves is what ``Plan.load``/``find``/``latest`` give
    back, its kind included; a study with no record is None, not an error, for ``find``."""
    from conftest import save_plan

    from study.records.plan import Plan, study_splits

    store = Store.at(tmp_path / "mlruns")
    save_plan(store, "g", grid="table1", seeds=3, created=1.0)
    save_plan(store, "r", config_file="/best.yaml", created=2.0)
    save_plan(store, "c", compare="g", points=[{"K": 4}], arms=[{"K": 4}], created=3.0)
    save_plan(store, "s", strata=[{"K": 2}, {"K": 4}], shares=[1, 1], created=4.0,
              dataset="fmnist")
    assert [Plan.load(store, s).kind for s in "grcs"] == ["grid", "rerun", "compare", "search"]
    g = Plan.load(store, "g")
    assert (g.grid, g.seeds, g.created) == ("table1", 3, 1.0)
    assert Plan.load(store, "c").points == [{"K": 4}]
    assert Plan.find(store, "none") is None and study_splits(store, "none") == []
    assert study_splits(store, "s") == [2, 4]
    assert Plan.latest(store, "digits") == "c" and Plan.latest(store, "fmnist") == "s"
