"""The trial function outside Ray, and the driver's MLflow tracking fed by its real results."""

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

import trainables.tune_trainable as tt
from study.engine.tracking import MlflowTracking
from study.records.store import Store

BASE = dict(dataset="digits", arch="resnet18", width=0.125, K=2, threshold=0.0, epochs=2,
            batch_size=128, subset=300, device="cpu")
SAMPLED = {"tau": 0.37, "threshold": 0.21}  # unlike every default: a dropped value would show


def test_the_trial_process_never_imports_mlflow():
    code = "import sys, trainables.tune_trainable; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@dataclass
class Reports:
    """What the trial hands to Tune: results and copies of the checkpoint folders."""

    tmp: Path
    results: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)

    def __call__(self, result, checkpoint=None):
        self.results.append(result)
        if checkpoint is not None:
            kept = self.tmp / f"checkpoint_{len(self.results)}"
            shutil.copytree(checkpoint.path, kept)
            self.checkpoints.append(tune.Checkpoint.from_directory(kept))


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """One real two-epoch trial, run without Ray: its results and checkpoints."""
    tmp = tmp_path_factory.mktemp("trial")
    reports = Reports(tmp)
    setup = tt.TrialSetup(base=BASE, linear_epochs=5, checkpoint_every=1).to_dict()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(tune, "report", reports)
        tt.run_trial(SAMPLED, setup)
    return setup, reports


def test_trial_reports_every_epoch_and_its_report_in_the_last_checkpoint(trial):
    _, reports = trial
    assert [r["epoch"] for r in reports.results] == [1, 2]
    first, last = reports.results
    assert tt.FINISHED not in first and last[tt.FINISHED] is True
    assert {"knn_val_acc", "loss_block1", "kept_neg_block2", "epoch_seconds"} <= set(
        first[tt.METRICS])
    report = Path(reports.checkpoints[-1].path) / tt.REPORT_DIR
    assert (report / tt.ENCODER_FILE).exists() and (report / "spectra" / "block_2.npy").exists()
    written = json.loads((report / "metrics.json").read_text())
    assert {k: written["config"][k] for k in SAMPLED} == SAMPLED  # the sampled values trained
    assert last[tt.FINAL]["linear_test_acc"] == written["linear_test_acc"]
    assert last[tt.FINAL]["effective_rank_block2"] == written["effective_rank"][1]
    assert [r["epoch"] for r in written["history"]] == [1, 2]
    # The saved encoder is the blocks alone (the heads serve training only).
    import torch

    from trainables.models import DecoupledResNet

    state = torch.load(report / tt.ENCODER_FILE, weights_only=True)
    model = DecoupledResNet("resnet18", 2, 1, "small", 0.125)
    model.encoder().load_state_dict(state)  # strict: every block weight, nothing else
    assert len(state) < len(model.state_dict())


def test_trial_restored_at_its_end_reports_the_finished_result_again(trial, monkeypatch):
    setup, reports = trial
    again = Reports(reports.tmp)
    monkeypatch.setattr(tune, "report", again)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: reports.checkpoints[-1])
    tt.run_trial(SAMPLED, setup)
    assert again.results == [reports.results[-1]]  # no epoch trained twice


@dataclass
class FakeTrial:
    """The fields of a Tune Trial that the callback reads."""

    trial_id: str
    config: dict
    last_result: dict | None = None
    checkpoint: object = None
    error_file: str | None = None


def _tracking(store: Store, setup: dict) -> MlflowTracking:
    experiment_id = store.experiment_id("digits")
    client = MlflowClient(store.tracking_uri)
    parent = client.create_run(experiment_id, tags={"study": "s"}).info.run_id
    return MlflowTracking(store.tracking_uri, experiment_id, parent, "s",
                          tt.TrialSetup(**setup), params={"budget": "smoke"})


def _feed(tracking: MlflowTracking, trial: FakeTrial, results: list, checkpoint=None):
    tracking.on_trial_start(0, [], trial)
    for r in results:
        tracking.on_trial_result(0, [], trial, r)
        trial.last_result = r
    trial.checkpoint = checkpoint
    tracking.on_trial_complete(0, [], trial)


def test_tracking_logs_a_finished_trial_with_its_artifacts(trial, tmp_path):
    setup, reports = trial
    store = Store.at(tmp_path / "mlruns")
    tracking = _tracking(store, setup)
    last = tmp_path / "checkpoint"  # a copy: the callback removes what it has logged
    shutil.copytree(reports.checkpoints[-1].path, last)
    _feed(tracking, FakeTrial("t1", SAMPLED), reports.results, tune.Checkpoint.from_directory(last))
    # Only the result it ended with stays (a few kB), for a driver killed before Ray saved.
    assert [p.name for p in last.iterdir()] == [tt.FINAL_FILE]
    assert json.loads((last / tt.FINAL_FILE).read_text())[tt.FINISHED] is True

    client = MlflowClient(store.tracking_uri)
    run = client.get_run(tracking.runs["t1"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == tracking.parent_run_id
    (data,) = run.inputs.dataset_inputs  # the runs table's Dataset column
    assert data.dataset.name == "digits" and len(data.dataset.digest) == 16
    sizes = json.loads(data.dataset.profile)
    assert sizes == {"pretrain": 300, "train": 300, "val": 144, "test": 359}  # of 1797
    assert run.data.params["tau"] == "0.37" and run.data.params["threshold"] == "0.21"
    assert run.data.params["budget"] == "smoke"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "knn_val_acc")]
    assert steps == [1, 2]
    assert run.data.metrics["linear_test_acc"] == reports.results[-1][tt.FINAL]["linear_test_acc"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {tt.ENCODER_FILE, "metrics.json", "probes.png", "spectra"} <= artifacts
    assert run.data.tags["encoder_state"] == f"runs:/{run.info.run_id}/{tt.ENCODER_FILE}"


def test_tracking_marks_stopped_diverged_and_failed_trials(trial, tmp_path):
    setup, reports = trial
    store = Store.at(tmp_path / "mlruns")
    tracking = _tracking(store, setup)
    _feed(tracking, FakeTrial("early", SAMPLED), reports.results[:1])
    diverged = {**reports.results[0], "diverged": True, tt.FINISHED: True}
    _feed(tracking, FakeTrial("nan", SAMPLED), [diverged])
    failed = FakeTrial("err", SAMPLED, error_file="/ray/err/error.txt")
    tracking.on_trial_result(0, [], failed, reports.results[0])
    tracking.on_trial_error(0, [], failed)

    client = MlflowClient(store.tracking_uri)
    runs = {t: client.get_run(r) for t, r in tracking.runs.items()}
    assert runs["early"].info.status == "KILLED"
    assert runs["early"].data.tags["early_stopped"] == "true"
    assert runs["nan"].info.status == "FAILED" and runs["nan"].data.tags["diverged"] == "true"
    assert runs["err"].info.status == "FAILED"
    assert runs["err"].data.tags["error"] == "/ray/err/error.txt"


def test_a_resumed_study_finds_each_trials_run_again(trial, tmp_path):
    setup, reports = trial
    store = Store.at(tmp_path / "mlruns")
    tracking = _tracking(store, setup)
    tracking.on_trial_result(0, [], FakeTrial("t1", SAMPLED), reports.results[0])
    tracking.flush()
    # The driver restarts: a new callback (unpickled by Tune) with no cache and no client.
    import pickle

    again = pickle.loads(pickle.dumps(tracking))
    again.runs.clear()
    # Restored from a checkpoint older than what was logged, the trial reports epoch 1 again:
    # it is logged once.
    again.on_trial_result(0, [], FakeTrial("t1", SAMPLED), reports.results[0])
    again.on_trial_result(0, [], FakeTrial("t1", SAMPLED), reports.results[1])
    again.on_experiment_end([])
    assert again.runs["t1"] == tracking.runs["t1"]
    client = MlflowClient(store.tracking_uri)
    steps = [m.step for m in client.get_metric_history(tracking.runs["t1"], "knn_val_acc")]
    assert steps == [1, 2]


def test_a_trial_restored_mid_run_replays_the_epochs_its_checkpoint_holds(trial, tmp_path,
                                                                           monkeypatch):
    setup, reports = trial
    again = Reports(tmp_path)
    monkeypatch.setattr(tune, "report", again)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: reports.checkpoints[0])  # epoch 1's
    tt.run_trial(SAMPLED, setup)
    assert [r["epoch"] for r in again.results] == [2]
    assert again.results[0][tt.REPLAY] == [{"epoch": 1, **reports.results[0][tt.METRICS]}]


def test_a_killed_driver_logs_the_epochs_it_lacked_from_the_replay(trial, tmp_path):
    """The driver logged epoch 1 and died with epoch 2 checkpointed but not logged: the trial,
    restored from epoch 2's checkpoint, reports epoch 3 with epochs 1 and 2 replayed."""
    setup, reports = trial
    store = Store.at(tmp_path / "mlruns")
    tracking = _tracking(store, setup)
    tracking.on_trial_result(0, [], FakeTrial("t1", SAMPLED), reports.results[0])
    tracking.flush()
    import pickle

    again = pickle.loads(pickle.dumps(tracking))  # a new driver
    again.runs.clear()
    first, second = reports.results
    replay = [{"epoch": 1, **first[tt.METRICS]}, {"epoch": 2, **second[tt.METRICS]}]
    again.on_trial_result(0, [], FakeTrial("t1", SAMPLED),
                          {**second, "epoch": 3, tt.REPLAY: replay})
    again.on_experiment_end([])
    client = MlflowClient(store.tracking_uri)
    history = client.get_metric_history(tracking.runs["t1"], "loss_block1")
    assert sorted(m.step for m in history) == [1, 2, 3]  # epoch 1 once, epoch 2 from the replay
    assert {m.step: m.value for m in history}[2] == second[tt.METRICS]["loss_block1"]


def test_epochs_are_written_together_and_all_of_them_by_the_end(trial, tmp_path, monkeypatch):
    import study.engine.tracking

    setup, reports = trial
    store = Store.at(tmp_path / "mlruns")
    tracking = _tracking(store, setup)
    client = MlflowClient(store.tracking_uri)
    monkeypatch.setattr(study.engine.tracking, "FLUSH_SECONDS", 3600.0)
    for r in reports.results:
        tracking.on_trial_result(0, [], FakeTrial("t1", SAMPLED), r)
        tracking.on_step_end(0, [])
    history = lambda: client.get_metric_history(tracking.runs["t1"], "knn_val_acc")  # noqa: E731
    assert history() == []  # held back
    tracking.on_experiment_end([])  # the end of Tuner.fit(), a stop included
    assert [m.step for m in history()] == [1, 2]
    monkeypatch.setattr(study.engine.tracking, "FLUSH_SECONDS", 0.0)
    tracking.on_trial_result(0, [], FakeTrial("t2", SAMPLED), reports.results[0])
    assert [m.step for m in client.get_metric_history(tracking.runs["t2"], "knn_val_acc")] == [1]


def test_each_trial_of_a_shared_gpu_leaves_room_for_its_cuda_context():
    total = 80 * 2**30
    share = tt.memory_fraction(0.25, total)
    assert share < 0.25
    assert 4 * (share * total + tt.CUDA_CONTEXT_BYTES) <= total
    assert tt.memory_fraction(0.5, 2 * 2**30) == 0.25  # a small GPU: at most half given up


@pytest.mark.parametrize(
    "device,share,expected",
    [("cuda:1", 0.25, [(tt.memory_fraction(0.25, 40 * 2**30), "cuda:1")]),
     ("cuda:0", 1.0, []),  # a whole GPU: no cap
     ("cpu", 0.25, [])],  # a trial on the CPU opens no CUDA context
)
def test_the_memory_cap_reaches_cuda_only_for_a_share_of_a_gpu(monkeypatch, device, share,
                                                               expected):
    """What a CPU can check: the fraction computed and passed. That the cap holds (an
    allocation past it raises) only a GPU shows."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: type("Props", (), {"total_memory": 40 * 2**30}))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda f, d: calls.append((f, str(d))))
    tt.cap_gpu_memory(torch.device(device), share)
    assert calls == expected


def test_a_trial_with_no_gpu_share_trains_on_the_cpu(tmp_path, monkeypatch):
    """Ray leaves every GPU visible to a 0-GPU trial: the study puts it on the CPU itself."""
    import ray

    from study.engine.cluster import resources as _resources
    from study.engine.tuner import trial_setup as _trial_setup
    from study.records.plan import Plan
    from study.spaces.loading import load_space, space_path

    space = load_space(space_path("digits"))
    store = Store.at(tmp_path / "mlruns")
    plan = Plan(study="s", dataset="digits", space_file=str(space.source), budget="smoke",
                trials=2, epochs=1, concurrency=3, gpus_per_trial=0.0, cpus_per_trial=1.0,
                data_dir=str(tmp_path), seed=0)
    assert _trial_setup(store, plan, space).base["device"] == "cpu"
    assert _trial_setup(store, plan, space).base["download"] is False  # the driver prepared it
    plan.gpus_per_trial = 0.5
    assert _trial_setup(store, plan, space).base["device"] == "auto"
    # The default share packs as many trials on each GPU as the concurrency needs.
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"GPU": 2.0, "CPU": 16.0})
    assert _resources(None, None, concurrency=3) == (0.5, 4.0)
    assert _resources(None, None, concurrency=2)[0] == 1.0
    assert _resources(None, None, concurrency=8)[0] == 0.25
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert _resources(None, None, concurrency=3) == (0.0, 2 / 3)


def test_study_line_counts_trials_and_estimates_time_left_from_measured_epochs():
    from types import SimpleNamespace

    from study.engine.progress import Progress
    from trainables.tune_trainable import METRICS, OBJECTIVE

    now = [0.0]
    p = Progress(epochs=10, trials=5, concurrency=2, status_every=60, study="s",
                 clock=lambda: now[0])
    running = SimpleNamespace(trial_id="a", status="RUNNING", config={"tau": 0.5, "K": 2},
                              last_result={"epoch": 4})
    done = SimpleNamespace(trial_id="b", status="TERMINATED",
                           config={"point": {"K": 4, "threshold": None}, "seed": 1},
                           last_result={"epoch": 10})
    for seconds, acc, trial in ((30.0, 0.5, done), (50.0, 0.7, running)):
        p.on_trial_result(0, [], trial, {OBJECTIVE: acc, "epoch": 1,
                                         METRICS: {"epoch_seconds": seconds}})
    now[0] = 3725.0
    # 3 pending x 10 epochs + 6 left of the running one = 36 epochs of 40 s, 2 at a time.
    assert p.status([running, done], now[0]) == (
        "s: 1 done, 1 running, 3 pending | 1h02m elapsed, about 12m00s left | "
        "best knn_val 0.7000 [a] K=2 tau=0.5")
    # A grid cell's point is flattened into the line; a diverged epoch never becomes the best.
    p.on_trial_result(0, [], done, {OBJECTIVE: 0.9, "epoch": 2, "diverged": True, METRICS: {}})
    assert p.best[1] == "a"
    from study.engine.progress import trial_params

    assert trial_params(done.config) == "K=4 seed=1 threshold=None"
    exported = {"point": {"K": 8, "threshold": 0.3, "tau": 0.5, "width": 0.25, "epochs": 8,
                          "dataset": "fmnist"}, "seed": 2}  # an exported point: its settings out
    assert trial_params(exported) == "K=8 seed=2 tau=0.5 threshold=0.3"


def test_the_bookkeeping_benchmarks_trial_reports_what_a_real_trial_reports(trial, tmp_path,
                                                                              monkeypatch):
    """``study.benchmarks.fake_trial.fake_trial`` stands in for the training in the benchmark: the
    same result keys every epoch and at the end, the same report files (its plots aside) and an
    encoder that loads into the trial's model."""
    from study.benchmarks.fake_trial import fake_trial

    setup, real = trial
    fake = Reports(tmp_path)
    monkeypatch.setattr(tune, "report", fake)
    fake_trial(SAMPLED, setup)
    assert [r["epoch"] for r in fake.results] == [r["epoch"] for r in real.results]
    for ours, theirs in zip(fake.results, real.results):
        assert set(ours) == set(theirs)
        assert set(ours[tt.METRICS]) == set(theirs[tt.METRICS])
    assert set(fake.results[-1][tt.FINAL]) == set(real.results[-1][tt.FINAL])

    def files(checkpoint):
        root = Path(checkpoint.path)
        return {str(p.relative_to(root)) for p in root.rglob("*")
                if p.is_file() and p.suffix != ".png"}

    assert files(fake.checkpoints[-1]) == files(real.checkpoints[-1])
    import torch

    from trainables.models import DecoupledResNet

    state = torch.load(Path(fake.checkpoints[-1].path) / tt.REPORT_DIR / tt.ENCODER_FILE,
                       weights_only=True)
    DecoupledResNet("resnet18", 2, 1, "small", 0.125).encoder().load_state_dict(state)


def test_a_data_set_two_drivers_log_at_once_is_logged_on_the_second_try(trial, tmp_path):
    """MLflow makes a data set's row on first use, not atomically: the driver that loses the
    race meets a unique key (seen with three drivers on one server, tests/test_servers.py)."""
    from mlflow.exceptions import MlflowException

    setup, reports = trial
    tracking = _tracking(Store.at(tmp_path / "mlruns"), setup)
    real, calls = tracking.client.log_inputs, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(psycopg2.errors.UniqueViolation) duplicate key value "
                                  "violates unique constraint \"dataset_pk\"")
        return real(*args, **kwargs)

    tracking.client.log_inputs = racing
    tracking.on_trial_result(0, [], FakeTrial("t1", SAMPLED), reports.results[0])
    assert len(calls) == 2
    run = MlflowClient(tracking.tracking_uri).get_run(tracking.runs["t1"])
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits"]
