"""A study on real infrastructure: a Ray head started with ``ray start`` and an MLflow tracking
server, both on loopback ports of this machine, each its own process tree."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} did not come up in {timeout} s")


@pytest.mark.slow
def test_smoke_study_through_a_ray_head_and_an_mlflow_server(tmp_path):
    ray_port, mlflow_port = _free_port(), _free_port()
    # Unix socket paths under the temp dir must stay short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE"):  # the study must find the token by itself
        env.pop(name, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port)],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"), env=env)
    # --block keeps the head's processes under this one: terminating it stops the head alone
    # (``ray stop`` would end every Ray process of the machine, the test session's too).
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--port", str(ray_port),
         "--num-cpus", "2", "--num-gpus", "0",
         "--include-dashboard", "false", "--temp-dir", str(ray_tmp), "--disable-usage-stats"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{mlflow_port}"
    try:
        _wait_for(lambda: urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200,
                  "the MLflow server", server)
        _wait_for(lambda: socket.create_connection(("127.0.0.1", ray_port), timeout=2),
                  "the Ray head", head)
        res = subprocess.run(
            [sys.executable, "-m", "study.tune", "--dataset", "digits", "--budget", "smoke",
             "--trials", "2", "--K", "2,4", "--epochs", "1", "--concurrency", "2",
             "--gpus-per-trial", "0",
             "--cpus-per-trial", "1", "--address", f"127.0.0.1:{ray_port}",
             "--tracking-uri", uri, "--store", str(tmp_path / "store"),
             "--study-name", "remote"],
            capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr[-3000:]

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("digits")
        runs = client.search_runs([exp.experiment_id], "tags.study = 'remote'")
        trials = [r for r in runs if "trial_id" in r.data.tags]
        assert len(runs) == 3 and len(trials) == 2
        finished = [r for r in trials if r.info.status == "FINISHED"]
        assert finished, [r.info.status for r in trials]
        for r in finished:
            assert 0 <= r.data.metrics["linear_test_acc"] <= 1
            files = {a.path for a in client.list_artifacts(r.info.run_id)}
            assert {"metrics.json", "encoder_state_dict.pt", "spectra"} <= files
        # The artifacts went through the server into its own destination, not the local store.
        assert list((tmp_path / "server-artifacts").rglob("metrics.json"))
        assert not (tmp_path / "store" / "artifacts").exists()
        assert client.search_model_versions("name = 'remote-encoder'")
    finally:
        head.terminate()
        server.terminate()
        head.wait(timeout=60)
        server.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
