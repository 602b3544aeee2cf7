"""The small commands: study.train's --config and --checkpoint, study.blocks, study.ui, and the
study's resource and resume choices that need no trial."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from study import blocks, train
from study.records.plan import Plan
from study.records.store import Store
from trainables.errors import ConfigError

EXPORT = {
    "dataset": "digits", "study": "s",
    "best": {"config": {"dataset": "digits", "K": 4, "threshold": 0.3, "tau": 0.4,
                        "epochs": 7, "subset": 128}},
    "per_K": {2: {"config": {"dataset": "digits", "K": 2, "threshold": -0.2, "tau": 0.6,
                             "epochs": 7, "subset": 128}}},
}


def test_train_config_gives_the_exported_point_and_flags_override_it(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(EXPORT))
    cfg = train.config_from_args(train.parse_args(["--config", str(path)]))
    assert (cfg.K, cfg.threshold, cfg.tau, cfg.epochs) == (4, 0.3, 0.4, 7)
    cfg = train.config_from_args(train.parse_args(["--config", str(path), "--config-K", "2"]))
    assert (cfg.K, cfg.threshold, cfg.tau) == (2, -0.2, 0.6)
    cfg = train.config_from_args(train.parse_args(
        ["--config", str(path), "--tau", "0.9", "--threshold", "none", "--epochs", "2"]))
    assert (cfg.K, cfg.threshold, cfg.tau, cfg.epochs) == (4, None, 0.9, 2)
    with pytest.raises(ConfigError, match="has no entry for K=8"):
        train.config_from_args(train.parse_args(["--config", str(path), "--config-K", "8"]))


def test_train_checkpoint_resumes_from_the_command_line(tmp_path, capsys):
    ckpt = tmp_path / "run.pt"
    args = ["--dataset", "digits", "--K", "2", "--subset", "128", "--batch-size", "64",
            "--linear-epochs", "0", "--device", "cpu", "--checkpoint", str(ckpt), "--json"]
    assert train.main([*args, "--epochs", "1"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["epoch"] for r in first["history"]] == [1] and ckpt.exists()
    assert train.main([*args, "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out.strip().splitlines()[-1])
    assert "resumed" in captured.err and "at epoch 1" in captured.err
    assert [r["epoch"] for r in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]  # epoch 1 kept, not trained again


def test_blocks_command_reports_table_3_and_table_1(capsys):
    assert blocks.main(["--dataset", "cifar10", "--K", "16", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table["blocks"]) == 16 and len(table["split_points"]) == 15
    assert table["split_points"][:3] == [[1, 1], [1, 2], [1, 3]]
    assert table["max_block_macs"] == pytest.approx(123e6, rel=0.02)  # Table 1, K = 16
    assert blocks.main(["--dataset", "fmnist", "--K", "8"]) == 0
    text = capsys.readouterr().out
    assert "resnet18 on fmnist (1, 28, 28), K=8" in text and "max block MACs" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_command_serves_the_store_and_opens_on_the_runs(tmp_path):
    """A live `study.ui`: the address it prints answers, and a real browser (Debian's chromium,
    headless) shows the study's run there, in the runs table rather than the GenAI overview."""
    from mlflow.tracking import MlflowClient

    from study.ui import runs_url

    store = Store.at(tmp_path / "mlruns")
    experiment = store.experiment_id("digits")
    MlflowClient(store.tracking_uri).create_run(experiment, run_name="study-run-to-find",
                                                tags={"study": "s"})
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "study.ui", "--store", str(store.root),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = runs_url(experiment, port)
        assert f"the runs of digits: {url}" in proc.stderr.readline() + proc.stderr.readline()
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search"
                req = urllib.request.Request(api, data=b'{"max_results": 10}',
                                             headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            except OSError:
                time.sleep(1)
        assert body is not None, "the UI never answered"
        assert "digits" in {e["name"] for e in body["experiments"]}
        browser = shutil.which("chromium")
        if browser is None:
            pytest.skip("no chromium here to render the page: apt-get install chromium")
        dom = subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000",
             "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        assert "study-run-to-find" in dom
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_bare_resume_takes_the_latest_study_of_the_dataset(tmp_path):
    store = Store.at(tmp_path / "mlruns")
    for name, dataset, created in (("old", "digits", 1.0), ("new", "digits", 2.0),
                                   ("other", "fmnist", 3.0)):
        Plan(study=name, dataset=dataset, space_file="", budget="smoke", trials=1, epochs=1,
             concurrency=1, gpus_per_trial=0, cpus_per_trial=1, data_dir="", seed=0,
             created=created).save(store)
    assert Plan.latest(store, "digits") == "new"
    with pytest.raises(ConfigError, match="no study of cifar10 in "):
        Plan.latest(store, "cifar10")


def test_resources_refuse_more_cpus_than_the_cluster_has(monkeypatch):
    import ray

    from study.engine.cluster import resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(ConfigError, match="--cpus-per-trial 4 exceeds the cluster's 2 CPUs"):
        resources(0.0, 4, concurrency=1)


def test_a_study_prepares_its_data_before_ray_starts(tmp_path, monkeypatch):
    """The driver fetches the data once; a data set it cannot get stops the study in one line
    before Ray starts or any trial could race on a download."""
    import study.engine.lifecycle as lifecycle
    import study.tune as tune_command
    from trainables.errors import DataError

    def no_ray(address):
        raise AssertionError("Ray started before the data was ready")

    def unavailable(name, data_dir, download=True):
        raise DataError(f"{name} not found in {data_dir}")

    monkeypatch.setattr(lifecycle, "init_ray", no_ray)
    monkeypatch.setattr(lifecycle, "prepare_data", unavailable)
    with pytest.raises(DataError, match="cifar10 not found in"):
        tune_command.main(["--dataset", "cifar10", "--store", str(tmp_path / "mlruns"),
                           "--data-dir", str(tmp_path / "data")])


def test_the_commands_that_read_a_study_never_import_torch():
    """export and report read MLflow: torch and torchvision would add seconds to each start
    (study.bench --bookkeeping times them as commands)."""
    code = ("import sys, study.export, study.report.__main__, study.engine.summary; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_reader_command_runs_without_the_cyclic_collector():
    """study.report and study.export end soon after they start: reference counting frees what
    they make, and the collector's scans cost about a second (study.bench --bookkeeping)."""
    import gc

    from study.engine.console import run

    seen = []
    try:
        with pytest.raises(SystemExit) as ended:
            run(lambda argv: seen.append(gc.isenabled()) or 0, [], reader=True)
    finally:
        gc.enable()  # this test process goes on
    assert seen == [False] and ended.value.code == 0
    with pytest.raises(SystemExit):
        run(lambda argv: seen.append(gc.isenabled()) or 0, [])
    assert seen == [False, True]
