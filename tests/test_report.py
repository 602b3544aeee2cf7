"""Grids through real Ray Tune and MLflow, then ``study.report`` from the store."""

import re
import shutil
import statistics
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import save_plan
from mlflow.tracking import MlflowClient

from study.records.ray_state import REGISTERED
from study.records.store import Store
from study.report import gather_study, grid_table
from study.report.__main__ import main as report
from study.tune import main as tune
from trainables.errors import ConfigError
from trainables.tune_trainable import FINAL_FILE

GRID_SPACE = """
dataset: digits
model: {arch: resnet18, width: 0.125}
train: {batch_size: 128, K: 2, threshold: 0.0, tau: 0.5}
search:
  threshold: {type: float, low: -1.0, high: 0.9}
budgets:
  smoke: {epochs: 1, trials: 1, concurrency: 2, subset: 256, linear_epochs: 5}
grids:
  pair: {K: 2, threshold: [none, 0.5], tau: 0.37}
"""


@pytest.fixture(scope="module")
def grid_study(ray_session, tmp_path_factory):
    """A two-cell digits grid over two seeds: four trials through Ray Tune into MLflow."""
    root = tmp_path_factory.mktemp("grid")
    space = root / "grid.yaml"
    space.write_text(GRID_SPACE)
    store = Store.at(root / "mlruns")
    assert tune(["--dataset", "digits", "--space", str(space), "--budget", "smoke",
                 "--grid", "pair", "--seeds", "2", "--seed", "5", "--cpus-per-trial", "1",
                 "--gpus-per-trial", "0", "--store", str(store.root), "--keep-weights", "2",
                 "--study-name", "g"]) == 0
    return store, root


def _trial_runs(store: Store, study: str):
    client = MlflowClient(store.tracking_uri)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study}'")
    return ([r for r in runs if "trial_id" not in r.data.tags],
            [r for r in runs if "trial_id" in r.data.tags])


@pytest.mark.slow
def test_grid_runs_every_cell_once_per_seed_to_its_end(grid_study):
    store, _ = grid_study
    parent, trials = _trial_runs(store, "g")
    assert len(parent) == 1
    tags = parent[0].data.tags
    assert (tags["study_kind"], tags["grid"]) == ("grid", "pair")
    cells = sorted((r.data.params["threshold"], r.data.params["seed"]) for r in trials)
    assert cells == [("0.5", "5"), ("0.5", "6"), ("None", "5"), ("None", "6")]
    for r in trials:
        p = r.data.params
        assert r.info.status == "FINISHED", "a grid stops no trial early"
        assert (p["K"], p["tau"], p["width"], p["subset"], p["epochs"]) == (
            "2", "0.37", "0.125", "256", "1")
        assert r.data.tags["cell"] == f"K=2 threshold={p['threshold']} tau=0.37"

    # --keep-weights 2: the two best by validation accuracy hold their encoder, the others not.
    client = MlflowClient(store.tracking_uri)
    ranked = sorted(trials, key=lambda r: (r.data.metrics["linear_val_acc"],
                                           r.data.metrics["knn_val_acc"]), reverse=True)
    for i, r in enumerate(ranked):
        files = {a.path for a in client.list_artifacts(r.info.run_id)}
        kept = i < 2
        assert r.data.tags["weights_kept"] == str(kept).lower(), i
        assert ("encoder_state_dict.pt" in files) == kept, (i, files)
        assert "metrics.json" in files  # the rest of the report stays
    from study.records.footprint import study_footprint

    disk = study_footprint(store, "g", "digits")
    best_dir = Path(urlparse(ranked[0].info.artifact_uri).path)
    assert disk["kept_encoders"] == 2
    assert disk["encoders"] == 2 * (best_dir / "encoder_state_dict.pt").stat().st_size
    # Every trial ended: its checkpoint holds only the result it ended with (and the mark that
    # the driver registered it, study.records.ray_state.REGISTERED).
    assert {f.name for f in (store.ray_dir / "g").rglob("checkpoint_*/*")} == {FINAL_FILE,
                                                                               REGISTERED}


@pytest.mark.slow
def test_report_of_a_grid_matches_its_runs_and_is_self_contained(grid_study, capsys):
    store, root = grid_study
    out = root / "report"
    assert report(["--study", "g", "--store", str(store.root), "--out", str(out)]) == 0

    # The table's cells, against mean and sample std computed here from the runs' metrics.
    _, trials = _trial_runs(store, "g")
    table = grid_table(gather_study(store, "g"))
    rows = {r[0]: r for r in table.rows}
    assert set(rows) == {"K=2 threshold=None tau=0.37", "K=2 threshold=0.5 tau=0.37"}
    col = table.headers.index("linear test %")
    val_col = table.headers.index("kNN val %")
    for T, name in (("None", "K=2 threshold=None tau=0.37"), ("0.5", "K=2 threshold=0.5 tau=0.37")):
        runs = [r for r in trials if r.data.params["threshold"] == T]
        assert rows[name][1] == "2/2"
        test = [100 * r.data.metrics["linear_test_acc"] for r in runs]
        assert rows[name][col] == f"{statistics.fmean(test):.1f} ± {statistics.stdev(test):.2f}"
        knn = [100 * r.data.metrics["knn_val_acc"] for r in runs]
        assert rows[name][val_col] == f"{statistics.fmean(knn):.1f} ± {statistics.stdev(knn):.2f}"
    printed = capsys.readouterr().err
    assert "Cells of pair: mean ± std over seeds" in printed and "Gain of T over Eq. (1)" in printed

    page = (out / "report.html").read_text()
    for section in ('id="grid"', 'id="figures"', 'id="trials"', "Fig. 5", "Fig. 1b", "Fig. 2"):
        assert section in page
    assert page.count('src="data:image/png;base64,') >= 3
    assert not re.search(r'(src|href)="(?!data:)', page), "the report references a file or URL"
    assert "http://" not in page and "https://" not in page

    client = MlflowClient(store.tracking_uri)
    parent, _ = _trial_runs(store, "g")
    logged = [a.path for a in client.list_artifacts(parent[0].info.run_id, "report")]
    assert logged == ["report/report.html"]

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium here to render the report: apt-get install chromium")
    dom = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={root / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom",
         (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "Cells over seeds" in dom and "Linear probes per block" in dom
    assert dom.count("<img") >= 3


def test_report_of_an_unknown_or_unfinished_study_is_one_line(tmp_path):
    store = Store.at(tmp_path / "mlruns")
    with pytest.raises(ConfigError, match="no study named 'nope' in .*; known: none"):
        report(["--study", "nope", "--store", str(store.root)])
    with pytest.raises(ConfigError, match="no study of digits in "):
        report(["--store", str(store.root)])
    experiment = store.experiment_id("digits")
    client = MlflowClient(store.tracking_uri)
    parent = client.create_run(experiment, tags={"study": "s"}).info.run_id
    client.create_run(experiment, tags={"study": "s", "trial_id": "t1",
                                        "mlflow.parentRunId": parent})
    save_plan(store, created=1.0, experiment_id=experiment, parent_run_id=parent)
    with pytest.raises(ConfigError, match=r"study 's' has no finished trial to report yet "
                                          r"\(1 running\)"):
        report(["--study", "s", "--store", str(store.root)])
