"""The study through real Ray Tune, OptunaSearch, ASHA and a SQLite MLflow store, on digits."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.export import export, load_export
from study.store import Store
from study.tune import FAIL_ONCE_ENV, main

pytestmark = pytest.mark.slow

SMOKE = ["--dataset", "digits", "--budget", "smoke", "--cpus-per-trial", "1"]


def _runs(store: Store, study: str):
    client = MlflowClient(store.tracking_uri)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study}'")
    parent = [r for r in runs if "trial_id" not in r.data.tags]
    trials = [r for r in runs if "trial_id" in r.data.tags]
    return client, parent, trials


def _optuna_states(store: Store, study: str) -> list[str]:
    s = optuna.load_study(study_name=f"digits/{study}", storage=store.optuna_url)
    return [t.state.name for t in s.trials]


def test_study_tracks_every_trial_and_exports(ray_session, tmp_path):
    store = Store.at(tmp_path / "mlruns")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    code = main([*SMOKE, "--trials", "3", "--epochs", "2", "--gpus-per-trial", "0",
                 "--store", str(store.root), "--study-name", "s1"])
    assert code == 0
    # Registering the encoder must not leave the process pointed at this store.
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    client, parent, trials = _runs(store, "s1")
    assert len(parent) == 1 and parent[0].data.params["budget"] == "smoke"
    assert len(trials) == 3 and len({r.data.tags["trial_id"] for r in trials}) == 3
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert r.info.status in ("FINISHED", "KILLED")
        assert client.get_metric_history(r.info.run_id, "knn_val_acc")
        assert {"threshold", "tau", "K", "budget", "seed", "arch", "width"} <= set(r.data.params)
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert finished, "no trial ran to the end"
    for r in finished:
        assert 0 <= r.data.metrics["linear_test_acc"] <= 1
        spectra = {a.path for a in client.list_artifacts(r.info.run_id, "spectra")}
        assert "spectra/spectra.png" in spectra and "spectra/block_1.npy" in spectra
        assert r.data.tags["encoder_state"].endswith("encoder_state_dict.pt")
    best = client.get_run(client.get_run(parent[0].info.run_id).data.tags["best_run_id"])
    assert best.data.tags["model_uri"].startswith("models:/")
    assert client.search_model_versions("name = 's1-encoder'"), "best encoder not registered"
    assert set(_optuna_states(store, "s1")) <= {"COMPLETE", "PRUNED"}
    assert len(_optuna_states(store, "s1")) == 3

    data = export(store, "digits", "s1")
    out = tmp_path / "best.yaml"
    import yaml

    out.write_text(yaml.safe_dump(data))
    best = load_export(out)
    assert best["dataset"] == "digits" and -1 <= best["threshold"] <= 1
    assert data["best"]["linear_val_acc"] == max(
        r.data.metrics["linear_val_acc"] for r in finished
    )


def test_interrupted_study_resumes_with_every_trial_once(ray_session, tmp_path):
    store = Store.at(tmp_path / "mlruns")
    args = [*SMOKE, "--trials", "3", "--epochs", "2", "--concurrency", "1",
            "--gpus-per-trial", "0", "--store", str(store.root), "--study-name", "s2"]
    with open(tmp_path / "stdout.log", "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "study.tune", *args], stdout=stdout,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        for line in proc.stderr:
            if "] finished" in line or "] stopped early" in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=180)[1]
    assert proc.returncode == 130, rest
    assert "--study-name s2 --resume" in rest
    _, _, before = _runs(store, "s2")
    assert 1 <= len(before) < 3

    assert main(["--dataset", "digits", "--study-name", "s2", "--resume",
                 "--store", str(store.root)]) == 0
    _, _, trials = _runs(store, "s2")
    ids = [r.data.tags["trial_id"] for r in trials]
    assert len(ids) == 3 and len(set(ids)) == 3  # one MLflow run per trial
    assert all(r.info.status in ("FINISHED", "KILLED") for r in trials)
    states = _optuna_states(store, "s2")
    assert "RUNNING" not in states and len(states) == 3


def test_failed_trial_resumes_from_its_checkpoint_in_its_own_run(
    ray_session, tmp_path, monkeypatch
):
    monkeypatch.setenv(FAIL_ONCE_ENV, "2")
    store = Store.at(tmp_path / "mlruns")
    assert main([*SMOKE, "--trials", "1", "--epochs", "3", "--gpus-per-trial", "0",
                 "--store", str(store.root), "--study-name", "s3"]) == 0
    assert list((store.root / "fail_markers" / "s3").iterdir()), "the failure never happened"
    client, _, trials = _runs(store, "s3")
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(trials[0].info.run_id, "knn_val_acc")]
    assert sorted(steps) == [1, 2, 3]  # epoch 1 came back from the checkpoint, not retrained


def test_four_trials_share_one_gpu(ray_session, tmp_path):
    store = Store.at(tmp_path / "mlruns")
    assert main(["--dataset", "digits", "--budget", "smoke", "--trials", "4", "--epochs", "2",
                 "--concurrency", "4", "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5",
                 "--store", str(store.root), "--study-name", "s4"]) == 0
    _, _, trials = _runs(store, "s4")
    assert len(trials) == 4
    assert all(r.data.params["gpu_fraction"] == "0.25" for r in trials)
    last_start = max(r.info.start_time for r in trials)
    first_end = min(r.info.end_time for r in trials)
    assert last_start < first_end, "the four trials did not run at once"


def _cli(*args, cwd):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "study.tune", *args], capture_output=True,
                          text=True, timeout=240, cwd=cwd, env=env)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "imagenet"], "error: dataset='imagenet' is unknown; allowed: digits"),
        (["--dataset", "digits", "--gpus-per-trial", "1000"],  # true on a GPU machine too
         "error: --gpus-per-trial 1000.0 asked, but the Ray cluster has "),
        (["--dataset", "digits", "--resume", "--study-name", "nope"],
         "error: no study named 'nope'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("search:", "serch:", "serch is not a known key"),
        ("high: 0.9", "high: 1.5", "search.threshold.high 1.5 is outside [-1, 1]"),
    ],
)
def test_bad_space_file_is_one_line(tmp_path, old, new, message):
    from study.space import space_path

    space = tmp_path / "space.yaml"
    space.write_text(space_path("digits").read_text().replace(old, new, 1))
    res = _cli("--dataset", "digits", "--space", str(space), cwd=tmp_path)
    assert res.returncode == 2
    assert f"error: {space}: " in res.stderr and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
