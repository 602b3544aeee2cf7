"""Several studies at once against one MLflow tracking server on PostgreSQL (Debian's
``postgresql``): three drivers, each with its own Ray and its own trials, lose nothing.

The drivers run the bookkeeping benchmark's study (``study.benchmarks.bookkeeping``: the real
driver, Ray Tune, Optuna, ASHA and our tracking; trials that report without training), so that the
test is about the store, in seconds. Skipped, with the reason, where PostgreSQL or psycopg2 is
missing.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.benchmarks.ui_speed import free_port, wait_http
from study.records.store import Store
from study.records.trials import read_trials

DRIVER = """
import json, sys
from pathlib import Path
from study.benchmarks.bookkeeping import run_study
from study.engine.cluster import init_ray
init_ray(None)
study = run_study(Path(sys.argv[1]), sys.argv[2], sys.argv[3], trials=8, epochs=1, K=2,
                  concurrency=2, callbacks=True, keep_weights=1)
print(json.dumps({"results": study["results"], "experiment_id": study["plan"].experiment_id}))
"""


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a loopback port, with a database ``mlflow``; its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server here: apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (the dev extra has it)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL refuses to run as root: the test needs root and runuser(8)")
    bin_dir = Path(found[-1]).parent
    # Under /tmp, not pytest's folder (root's, closed to other users): the server's user
    # must reach it.
    root = Path(tempfile.mkdtemp(prefix="sls-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()

    def as_postgres(*cmd):
        done = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    as_postgres(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U",
                "postgres")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-w", "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "-l",
                str(root / "log"), "start")
    try:
        subprocess.run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "postgres", "-c", "create database mlflow"], check=True,
                       capture_output=True, timeout=60)
        # psycopg2 named: SQLAlchemy 2.1's default PostgreSQL driver is psycopg (3).
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate",
                    "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_three_drivers_against_one_mlflow_server_on_postgresql_lose_nothing(tmp_path,
                                                                            postgres):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, server)
        drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / f"d{i}"), uri,
                                     f"driver{i}"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for i in range(3)]
        outs = []
        for proc in drivers:
            text = proc.communicate(timeout=900)[0]
            assert proc.returncode == 0, text[-3000:]
            assert "View run" not in text  # the study's console is its own
            outs.append(json.loads(text.strip().splitlines()[-1]))
        assert len({o["experiment_id"] for o in outs}) == 1  # one experiment, three studies
        client = MlflowClient(uri)
        for i, out in enumerate(outs):
            trials = read_trials(Store.at(tmp_path / f"d{i}", uri), "digits", f"driver{i}")
            assert len(trials) == 8
            # Ended as they should: a finished trial beyond the best keeps no weights (their
            # deletion goes through the server too); FAILED only for a diverged one.
            assert all(t.status in ("FINISHED", "KILLED") or "diverged" in t.tags
                       for t in trials), [(t.status, t.tags.get("error")) for t in trials]
            finished = [t for t in trials if t.status == "FINISHED"]  # 1 epoch: all but a
            assert len(finished) >= 2, "too few finished trials to drop any weights"  # diverged
            assert sum(t.tags.get("weights_kept") == "true" for t in finished) == 1
            # Every result Tune took is in MLflow: one epoch_seconds point per reported epoch.
            logged = sum(len(client.get_metric_history(t.run_id, "epoch_seconds"))
                         for t in trials)
            assert logged == out["results"]
        assert "database is locked" not in (tmp_path / "server.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=60)
