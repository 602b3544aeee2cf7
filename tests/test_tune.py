"""The study through real Ray Tune, OptunaSearch, ASHA and a SQLite MLflow store, on digits."""

import math
import os
import re
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.engine.tuner import FAIL_ONCE_ENV
from study.export import export, load_export
from study.records.ray_state import REGISTERED
from study.records.store import Store
from study.tune import main
from trainables.tune_trainable import FINAL_FILE

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


# Three trials whose fate is known in advance, run one after another. ASHA (grace period 1)
# cannot stop the first trial at a rung, and stops a later one that scores below the 75th
# percentile of the earlier ones there.
#  1. lr 1e30 diverges (NaN) in its first epoch: objective 0, tagged `diverged`.
#  2. The good one, with values that differ from every default (T 0.21, tau 0.37, K 2).
#  3. weight decay 1000 at lr 0.1 squashes every weight in one epoch: kNN at chance (about 0.1,
#     against about 0.7 for trial 2 after one epoch), so ASHA stops it.
FATES_SPACE = """
dataset: digits
model: {arch: resnet18, width: 0.25}
train: {batch_size: 128, K: 4, threshold: 0.0, tau: 0.5, lr: 1.0e-3, weight_decay: 1.0e-6}
search:
  threshold: {type: float, low: -1.0, high: 0.9}
  tau: {type: float, low: 0.1, high: 1.0, log: true}
  K: {type: categorical, choices: [2]}
  lr: {type: categorical, choices: [1.0e-3, 0.1, 1.0e+30]}
  weight_decay: {type: categorical, choices: [1.0e-6, 1000.0]}
points_to_evaluate:
  - {threshold: 0.0, tau: 0.5, K: 2, lr: 1.0e+30, weight_decay: 1.0e-6}
  - {threshold: 0.21, tau: 0.37, K: 2, lr: 1.0e-3, weight_decay: 1.0e-6}
  - {threshold: 0.0, tau: 0.5, K: 2, lr: 0.1, weight_decay: 1000.0}
budgets:
  smoke: {epochs: 2, trials: 3, concurrency: 1, grace_period: 1, linear_epochs: 10}
"""


def _fate(params: dict) -> str:
    if float(params["lr"]) > 1e29:
        return "diverged"
    return "stopped" if float(params["weight_decay"]) > 1 else "finished"


@pytest.mark.slow
def test_study_tracks_every_trial_as_it_ended_and_exports(ray_session, tmp_path):
    store = Store.at(tmp_path / "mlruns")
    space = tmp_path / "fates.yaml"
    space.write_text(FATES_SPACE)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    code = main(["--dataset", "digits", "--space", str(space), "--budget", "smoke",
                 "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--store", str(store.root),
                 "--study-name", "s1"])
    assert code == 0
    # Registering the encoder must not leave the process pointed at this store.
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    client, parent, trials = _runs(store, "s1")
    assert len(parent) == 1 and parent[0].data.params["budget"] == "smoke"
    assert len(trials) == 3 and len({r.data.tags["trial_id"] for r in trials}) == 3
    runs = {_fate(r.data.params): r for r in trials}
    assert set(runs) == {"diverged", "finished", "stopped"}
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert all(math.isfinite(v) for v in r.data.metrics.values()), "a NaN reached MLflow"

    diverged = runs["diverged"]
    assert diverged.info.status == "FAILED" and diverged.data.tags["diverged"] == "true"
    # Its kNN on NaN features means nothing: left out of MLflow; Optuna gets 0 (below).
    assert "knn_val_acc" not in diverged.data.metrics
    stopped = runs["stopped"]
    assert stopped.info.status == "KILLED" and stopped.data.tags["early_stopped"] == "true"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "knn_val_acc")] == [1]
    assert stopped.data.metrics["knn_val_acc"] < 0.3
    good = runs["finished"]
    assert good.info.status == "FINISHED"
    assert 0.5 < good.data.metrics["knn_val_acc"] and 0 <= good.data.metrics["linear_test_acc"]
    spectra = {a.path for a in client.list_artifacts(good.info.run_id, "spectra")}
    assert "spectra/spectra.png" in spectra and "spectra/block_2.npy" in spectra
    best = client.get_run(client.get_run(parent[0].info.run_id).data.tags["best_run_id"])
    assert best.info.run_id == good.info.run_id
    assert best.data.tags["model_uri"].startswith("models:/")
    assert client.search_model_versions("name = 's1-encoder'"), "best encoder not registered"

    # Optuna's trials, their values and their states, against MLflow's runs.
    study = optuna.load_study(study_name="digits/s1/K=2", storage=store.optuna_url)
    states = {_fate(t.params): t for t in study.trials}
    assert {f: t.state.name for f, t in states.items()} == {
        "diverged": "COMPLETE", "finished": "COMPLETE", "stopped": "PRUNED"}
    assert states["diverged"].value == 0.0
    assert states["finished"].value == pytest.approx(good.data.metrics["knn_val_acc"])
    for fate, t in states.items():
        for name, value in t.params.items():
            assert float(runs[fate].data.params[name]) == pytest.approx(value), (fate, name)
    assert good.data.params["tau"] == "0.37" and good.data.params["threshold"] == "0.21"

    # Everything a trial made is in MLflow: no ended trial keeps a checkpoint on disk.
    assert {f.name for f in (store.ray_dir / "s1").glob("*/checkpoint_*/*")} == {FINAL_FILE,
                                                                                  REGISTERED}

    data = export(store, "digits", "s1")
    assert data["trials"] == {"total": 3, "finished": 1, "stopped_early": 1, "diverged": 1}
    assert data["best"]["run_id"] == good.info.run_id and list(data["per_K"]) == [2]
    out = tmp_path / "best.yaml"
    import yaml

    out.write_text(yaml.safe_dump(data))
    config = load_export(out)
    assert (config["threshold"], config["tau"], config["K"]) == (0.21, 0.37, 2)

    # The report of a search: the best T per K, the landscape with each trial's fate, Optuna's
    # history; the trials table says which trial diverged and which was stopped early.
    from study.report.__main__ import main as report

    assert report(["--study", "s1", "--store", str(store.root), "--out",
                   str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="search"' in page and "Optimisation history" in page and "The T landscape" in page
    best_row = re.search(r"<h3>Best T per K.*?<tbody>(.*?)</tbody>", page).group(1)
    assert best_row.startswith("<tr><td>2</td><td>0.21</td><td>0</td><td>0.37</td>"
                               "<td>paper</td>")
    states = re.findall(r"<td>(finished|stopped early|diverged)</td></tr>", page)
    assert sorted(states) == ["diverged", "finished", "stopped early"]


def test_leftovers_of_a_killed_driver_are_closed(tmp_path):
    """What Ray's last saved state did not know: a trial run and an Optuna trial left RUNNING."""
    import optuna

    from study.engine.finish import close_leftovers
    from study.engine.resume.lost import LOST
    from study.records.plan import Plan

    store = Store.at(tmp_path / "mlruns")
    experiment = store.experiment_id("digits")
    client = MlflowClient(store.tracking_uri)
    parent = client.create_run(experiment, tags={"study": "s"}).info.run_id
    done = client.create_run(experiment, tags={"study": "s", "trial_id": "a"}).info.run_id
    client.set_terminated(done, "FINISHED")
    left = client.create_run(experiment, tags={"study": "s", "trial_id": "b"}).info.run_id
    other = client.create_run(experiment, tags={"study": "t", "trial_id": "c"}).info.run_id
    study = optuna.create_study(study_name="digits/s", storage=store.optuna_url)
    study.ask()
    study.tell(study.ask(), 0.5)
    plan = Plan(study="s", dataset="digits", space_file="", budget="smoke", trials=2, epochs=1,
                concurrency=1, gpus_per_trial=0, cpus_per_trial=1, data_dir="", seed=0,
                parent_run_id=parent, experiment_id=experiment)
    close_leftovers(store, plan)
    assert client.get_run(left).info.status == "KILLED"
    assert client.get_run(left).data.tags["lost"] == LOST
    assert client.get_run(done).info.status == "FINISHED" and "lost" not in \
        client.get_run(done).data.tags
    assert client.get_run(other).info.status == "RUNNING"  # another study's: untouched
    assert client.get_run(parent).info.status == "RUNNING"  # the summary closes the parent
    assert _optuna_states(store, "s") == ["FAIL", "COMPLETE"]
    trials = optuna.load_study(study_name="digits/s", storage=store.optuna_url).trials
    assert trials[0].user_attrs["lost"] == LOST and "lost" not in trials[1].user_attrs


# The monitor every 2 epochs: ASHA's first rung (grace period 2) is decided at epoch 2, the first
# epoch the monitor reports, and the weight-decay trial that is at chance there is stopped.
CADENCE_SPACE = FATES_SPACE.replace(
    "smoke: {epochs: 2, trials: 3, concurrency: 1, grace_period: 1, linear_epochs: 10}",
    "smoke: {epochs: 4, trials: 2, concurrency: 1, grace_period: 2, linear_epochs: 5, "
    "monitor_every: 2, monitor_images: 512}").replace(
    "  - {threshold: 0.0, tau: 0.5, K: 2, lr: 1.0e+30, weight_decay: 1.0e-6}\n", "")


@pytest.mark.slow
def test_the_monitor_cadence_reaches_asha_on_the_epochs_it_reports(ray_session, tmp_path):
    store = Store.at(tmp_path / "mlruns")
    space = tmp_path / "cadence.yaml"
    space.write_text(CADENCE_SPACE)
    assert main(["--dataset", "digits", "--space", str(space), "--budget", "smoke",
                 "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--store", str(store.root),
                 "--study-name", "cadence"]) == 0
    client, _, trials = _runs(store, "cadence")
    runs = {_fate(r.data.params): r for r in trials}
    assert set(runs) == {"finished", "stopped"}

    def steps(run, key):
        return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))

    good, bad = runs["finished"], runs["stopped"]
    assert steps(good, "knn_val_acc") == [2, 4] and steps(good, "epoch_seconds") == [1, 2, 3, 4]
    # Stopped at the rung, epoch 2: not at epoch 1 (no monitor there), not later.
    assert steps(bad, "knn_val_acc") == [2] and steps(bad, "epoch_seconds") == [1, 2]
    assert bad.data.tags["early_stopped"] == "true"
    assert good.data.params["monitor_every"] == "2" and good.data.params["monitor_images"] == "512"
    study = optuna.load_study(study_name="digits/cadence/K=2", storage=store.optuna_url)
    # Optuna hears the monitored epochs only (the last one as the trial's value).
    done = next(t for t in study.trials if t.state.name == "COMPLETE")
    assert list(done.intermediate_values) == [2]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]


@pytest.mark.slow
def test_failed_trial_resumes_from_its_checkpoint_in_its_own_run(
    ray_session, tmp_path, monkeypatch
):
    monkeypatch.setenv(FAIL_ONCE_ENV, "2")
    store = Store.at(tmp_path / "mlruns")
    assert main([*SMOKE, "--trials", "1", "--K", "4", "--epochs", "3", "--gpus-per-trial", "0",
                 "--store", str(store.root), "--study-name", "s3"]) == 0
    assert list((store.root / "fail_markers" / "s3").iterdir()), "the failure never happened"
    client, _, trials = _runs(store, "s3")
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(trials[0].info.run_id, "knn_val_acc")]
    assert sorted(steps) == [1, 2, 3]  # epoch 1 came back from the checkpoint, not retrained


@pytest.mark.slow
def test_four_trials_share_one_gpu(ray_session, tmp_path):
    """Ray's scheduling of quarter GPUs, on a logical GPU. Each trial's memory cap is computed
    and passed to CUDA only when it runs there (tests/test_tracking.py); that the cap holds (an
    allocation past it raises) only a real GPU shows."""
    store = Store.at(tmp_path / "mlruns")
    assert main(["--dataset", "digits", "--budget", "smoke", "--trials", "4", "--epochs", "1",
                 "--concurrency", "4", "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5",
                 "--store", str(store.root), "--study-name", "s4"]) == 0
    _, _, trials = _runs(store, "s4")
    assert len(trials) == 4
    assert all(r.data.params["gpu_fraction"] == "0.25" for r in trials)
    assert all(r.data.params["device"] == "auto" for r in trials)  # CUDA where there is one
    last_start = max(r.info.start_time for r in trials)
    first_end = min(r.info.end_time for r in trials)
    assert last_start < first_end, "the four trials did not run at once"


@pytest.mark.slow
def test_exported_points_rerun_with_seeds(ray_session, tmp_path):
    """--config best.yaml --seeds 2: every distinct exported point, once per seed, each trained
    to its end with the point's values (no search, no early stopping)."""
    import yaml

    point = {"dataset": "digits", "arch": "resnet18", "width": 0.125, "K": 2,
             "threshold": 0.21, "tau": 0.37, "epochs": 5, "batch_size": 128, "subset": 256}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"dataset": "digits", "best": {"config": point},
                                    "per_K": {2: {"config": point}}}))
    store = Store.at(tmp_path / "mlruns")
    assert main([*SMOKE, "--config", str(path), "--seeds", "2", "--seed", "3", "--epochs", "1",
                 "--gpus-per-trial", "0", "--store", str(store.root),
                 "--study-name", "again"]) == 0
    _, parent, trials = _runs(store, "again")
    assert len(parent) == 1 and parent[0].data.params["seeds"] == "2"
    assert sorted(r.data.params["seed"] for r in trials) == ["3", "4"]
    for r in trials:
        assert r.info.status == "FINISHED"
        p = r.data.params
        assert (p["tau"], p["threshold"], p["K"], p["width"], p["subset"]) == (
            "0.37", "0.21", "2", "0.125", "256")
        assert p["epochs"] == "1"  # --epochs overrides the point's own
        assert [m.step for m in MlflowClient(store.tracking_uri).get_metric_history(
            r.info.run_id, "knn_val_acc")] == [1]


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
        # Nothing listens on port 1: one line within seconds, not Ray's minutes of retries.
        (["--dataset", "digits", "--address", "127.0.0.1:1"],
         "error: --address 127.0.0.1:1: nothing answers there (Connection refused); start a head"),
        (["--dataset", "digits", "--grid", "table2"],
         "search_spaces/digits.yaml: grid 'table2' is not defined; allowed: table1, ablation, "
         "tsweep"),
        (["--dataset", "digits", "--seeds", "2"],
         "error: --seeds goes with --grid, --config or --compare"),
        (["--dataset", "digits", "--grid", "table1", "--seeds", "0"], "error: --seeds 0 must be"),
        (["--dataset", "digits", "--K", "3"],
         "error: --K 3 is not a split of "),
        (["--dataset", "digits", "--grid", "table1", "--K", "4"],
         "error: --K restricts a search to splits; the points of --grid name their own K"),
        (["--dataset", "digits", "--trials", "3"],
         "error: --trials 3 leaves a split without a trial: a search gives each of its 4 splits "
         "(K=1, K=2, K=4, K=8) its share; give at least 4, or choose splits with --K"),
        (["--dataset", "digits", "--compare", "nope"], "error: no study named 'nope'"),
        (["--dataset", "digits", "--address", "somewhere"],
         "error: --address 'somewhere' is not HOST:PORT, ray://HOST:PORT or auto"),
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
    from study.spaces.loading import space_path

    space = tmp_path / "space.yaml"
    space.write_text(space_path("digits").read_text().replace(old, new, 1))
    res = _cli("--dataset", "digits", "--space", str(space), cwd=tmp_path)
    assert res.returncode == 2
    assert f"error: {space}: " in res.stderr and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


PARETO_SPACE = """
dataset: digits
model: {arch: resnet18, width: 0.125}
train: {batch_size: 128, K: 4, threshold: 0.0, tau: 0.5}
search:
  K: {type: categorical, choices: [1, 2, 4]}
  head: {type: categorical, choices: [paper, mlp]}
  threshold: {type: float, low: -1.0, high: 0.9}
  threshold_slope: {type: float, low: -0.5, high: 0.5}
points_to_evaluate:
  - {K: 4, head: paper, threshold: 0.0, threshold_slope: 0.0}
  - {K: 4, head: mlp, threshold: 0.1, threshold_slope: 0.4}
objectives:
  - {metric: knn_val_acc, mode: max}
  - {metric: max_block_head_macs, mode: min}
budgets:
  smoke: {epochs: 2, trials: 4, concurrency: 2, grace_period: 2, subset: 256, linear_epochs: 5}
"""


@pytest.mark.slow
def test_multi_objective_study_exports_its_pareto_front(ray_session, tmp_path):
    from study.records.pareto import dominates

    space = tmp_path / "pareto.yaml"
    space.write_text(PARETO_SPACE)
    store = Store.at(tmp_path / "mlruns")
    assert main(["--dataset", "digits", "--space", str(space), "--budget", "smoke",
                 "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--store", str(store.root),
                 "--study-name", "mo"]) == 0
    client, _, trials = _runs(store, "mo")
    assert len(trials) == 4
    # Optuna searched both objectives and got both values from every finished trial.
    study = optuna.load_study(study_name="digits/mo", storage=store.optuna_url)
    assert len(study.directions) == 2
    finished = {r.info.run_id: r for r in trials if r.info.status == "FINISHED"}
    assert len(finished) >= 2
    by_number = {t.number: t for t in study.trials}
    assert all(len(t.values) == 2 for t in by_number.values() if t.state.name == "COMPLETE")
    # The sloped point's blocks each had their own T, logged beside their kept ratios.
    sloped = next(r for r in trials if r.data.params["head"] == "mlp"
                  and r.data.params["threshold_slope"] == "0.4")
    assert [sloped.data.metrics[f"threshold_block{k}"] for k in (1, 2, 3, 4)] == \
        pytest.approx([0.1, 0.1 + 0.4 / 3, 0.1 + 0.8 / 3, 0.5])

    data = export(store, "digits", "mo")
    objectives = [[o["metric"], o["mode"]] for o in data["objectives"]]
    values = {rid: {m: r.data.metrics[m] for m, _ in objectives} for rid, r in finished.items()}
    members = {e["run_id"] for e in data["pareto"]}
    assert members and members <= set(finished), "a front member did not finish"
    for e in data["pareto"]:
        assert e["objectives"] == pytest.approx(values[e["run_id"]])
        assert not any(dominates(v, values[e["run_id"]], objectives) for v in values.values())
    for rid in set(finished) - members:
        assert any(dominates(values[m], values[rid], objectives) for m in members), rid
    # The paper's heads cost more than the pooled MLP heads at the same K.
    paper, mlp = (next(r for r in trials if r.data.params["head"] == h
                       and r.data.params["K"] == "4" and r.info.status == "FINISHED")
                  for h in ("paper", "mlp"))
    assert mlp.data.metrics["max_block_head_macs"] < paper.data.metrics["max_block_head_macs"]
    assert mlp.data.metrics["max_block_macs"] == paper.data.metrics["max_block_macs"]

    # The report draws the front and lists exactly the exported members.
    from study.report.__main__ import main as report

    assert report(["--study", "mo", "--store", str(store.root), "--out",
                   str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="front"' in page and "Accuracy against parallel cost" in page
    listed = re.search(r"<h3>Pareto front over.*?<tbody>(.*?)</tbody>", page).group(1)
    assert sorted(re.findall(r"<tr><td>([^<]+)</td>", listed)) == sorted(
        e["trial_id"] for e in data["pareto"])
