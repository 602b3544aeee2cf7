"""The fault matrix: a real study process stopped by a real signal (or a dead server, a full
disk), then ``--resume`` until it completes, then the invariants of a completed study.

Each stop is sent to the study's process group, as a terminal sends Ctrl-C. Every run of the
study, the stopped ones included, is checked for tracebacks on its console.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.records.ray_state import REGISTERED, saved_state
from study.records.store import Store
from trainables.specs import FINAL_FILE

# Four trials, two at a time, two epochs each: two waves. Small enough for ~20 s a run.
SPACE = """
dataset: digits
model: {arch: resnet18, width: 0.125}
train: {batch_size: 128, K: 2, threshold: 0.0, tau: 0.5, lr: 1.0e-3, weight_decay: 1.0e-6}
search:
  threshold: {type: float, low: -1.0, high: 0.9}
  tau: {type: float, low: 0.1, high: 1.0, log: true}
  K: {type: categorical, choices: [1, 2]}
points_to_evaluate:
  - {threshold: 0.0, tau: 0.5, K: 2}
budgets:
  smoke: {epochs: 2, trials: 4, concurrency: 2, grace_period: 1, linear_epochs: 5}
"""
TRIALS, EPOCHS = 4, 2
TIMEOUT = 300


class Study:
    """One study's store, its runs as subprocesses and what each printed."""

    def __init__(self, tmp_path: Path, name: str, tracking_uri: str | None = None,
                 trials: int = TRIALS, status_every: int = 600):
        self.root = tmp_path / "mlruns"
        self.trials = trials
        self.status_every = status_every
        self.name = name
        self.space = tmp_path / "space.yaml"
        self.space.write_text(SPACE)
        self.tracking_uri = tracking_uri
        self.store = Store.at(self.root, tracking_uri)
        self.consoles: list[str] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def args(self, resume: bool) -> list[str]:
        args = ["--dataset", "digits", "--store", str(self.root), "--study-name", self.name,
                "--status-every", str(self.status_every)]
        if self.tracking_uri:
            args += ["--tracking-uri", self.tracking_uri]
        if resume:
            return [*args, "--resume"]
        return [*args, "--space", str(self.space), "--budget", "smoke", "--cpus-per-trial", "1",
                "--gpus-per-trial", "0", "--trials", str(self.trials)]

    def start(self, resume: bool = False, code: Path | None = None) -> subprocess.Popen:
        """The study's command from this checkout, or from the tree ``code`` (an older one)."""
        if not resume:
            self.stratified = code is None  # this checkout searches each split on its own
        proc = subprocess.Popen(
            [sys.executable, "-m", "study.tune", *self.args(resume)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=self.env, start_new_session=True,
            cwd=code)
        proc.lines = []
        return proc

    def watch(self, proc, until, timeout: float = TIMEOUT) -> None:
        """Read the console until ``until(lines)`` holds."""
        # A study that goes silent is killed at the deadline, which ends the loop below.
        timer = threading.Timer(timeout, lambda: _kill_group(proc))
        timer.start()
        try:
            for line in proc.stdout:
                proc.lines.append(line)
                if until(proc.lines):
                    return
        finally:
            timer.cancel()
        raise AssertionError("the study ended (or went silent) before the moment to stop it:\n"
                             + "".join(proc.lines)[-3000:])

    def end(self, proc, timeout: float = TIMEOUT) -> tuple[int, str]:
        try:
            rest = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise
        console = "".join(proc.lines) + rest
        self.consoles.append(console)
        assert "Traceback" not in console, console[-4000:]
        return proc.returncode, console

    def resume(self) -> tuple[int, str]:
        return self.end(self.start(resume=True))

    def complete(self, tries: int = 3) -> str:
        """``--resume`` until the study completes (once is the rule; the cap is a guard)."""
        for _ in range(tries):
            code, console = self.resume()
            if code == 0:
                return console
            assert code == 130, console[-3000:]
        raise AssertionError(f"not complete after {tries} resumes")


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def signal_group(proc, sig) -> None:
    os.killpg(proc.pid, sig)


def ended(lines) -> int:
    return sum(("] finished" in x or "] stopped early" in x) for x in lines)


def started(lines) -> int:
    return sum("] started" in x for x in lines)


def check_complete(study: Study, epochs: int = EPOCHS) -> None:
    """The invariants of a completed study."""
    state = saved_state(study.root / "ray" / study.name, study.trials)
    assert state is not None and state.complete and len(state.trials) == study.trials, state
    ray_ids = {t.trial_id for t in state.trials}

    client = MlflowClient(study.store.tracking_uri)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study.name}'")
    parents = [r for r in runs if "trial_id" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    trial_runs = [r for r in runs if "trial_id" in r.data.tags and "lost" not in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in trial_runs) == sorted(ray_ids)
    for r in runs:
        assert r.info.status != "RUNNING", r.data.tags
    for r in trial_runs:
        tags = r.data.tags
        assert (r.info.status == "FINISHED"
                or (r.info.status == "KILLED" and tags.get("early_stopped") == "true")
                or (r.info.status == "FAILED" and ("diverged" in tags or "error" in tags))), tags
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "epoch_seconds")]
        last = epochs if r.info.status == "FINISHED" else max(steps, default=0)
        assert last >= 1, f"a trial run without its epochs: {tags}"
        assert sorted(steps) == list(range(1, last + 1)), steps  # every epoch, once
        for key in r.data.metrics:  # no metric's step logged twice, none past the last epoch
            logged = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(logged) == len(set(logged)) and max(logged) <= last, (key, logged)
        if r.info.status == "FINISHED":
            assert "linear_val_acc" in r.data.metrics
    for r in runs:
        if "lost" in r.data.tags:
            assert r.info.status == "KILLED"

    # Each split kept its own search across every stop: its Optuna study holds its share. (A
    # study started before the strata has one Optuna study.)
    per_stratum = optuna_trials(study)
    assert list(per_stratum) == ([f"digits/{study.name}/K={K}" for K in (1, 2)]
                                 if study.stratified else [f"digits/{study.name}"])
    for name, trials in per_stratum.items():
        states = [t.state.name for t in trials]
        share = study.trials // len(per_stratum)
        assert sum(s in ("COMPLETE", "PRUNED") for s in states) == share, (name, states)
    trials = [t for ts in per_stratum.values() for t in ts]
    states = [t.state.name for t in trials]
    assert not {"RUNNING", "WAITING"} & set(states), states
    # FAIL only for a trial that failed, or one the searcher proposed that no run continued
    # (a stopped driver's), marked lost.
    assert all("lost" in t.user_attrs for t in trials if t.state.name == "FAIL"), states

    # Every split's paper point (the space's point, moved to the split) ended with its result.
    if study.stratified:
        for name, ts in per_stratum.items():
            assert any(t.params == {"threshold": 0.0, "tau": 0.5}
                       and t.state.name in ("COMPLETE", "PRUNED") for t in ts), name

    # No weights left behind: an ended trial keeps at most its final report (a few kB).
    for trial_dir in (study.root / "ray" / study.name).iterdir():
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        assert len(checkpoints) <= 1, checkpoints
        kept = [f for c in checkpoints for f in c.rglob("*") if f.is_file()]
        assert {f.name for f in kept} <= {FINAL_FILE, REGISTERED}, kept
        assert sum(f.stat().st_size for f in kept) < 64_000, kept

    versions = client.search_model_versions(f"name = '{study.name}-encoder'")
    assert len(versions) == 1, [v.version for v in versions]
    record = study.store.load_study(study.name)
    assert record["completed"] > 0


def optuna_trials(study: Study) -> dict[str, list]:
    """The study's Optuna trials, by Optuna study: one per split (study.spaces.strata)."""
    from study.records.plan import Plan
    from study.spaces.strata import optuna_study_names

    storage = optuna.storages.RDBStorage(study.store.optuna_url)
    plan = Plan.load(study.store, study.name)
    return {name: optuna.load_study(study_name=name, storage=storage).trials
            for name in optuna_study_names(plan)}


def check_resume_of_a_complete_study_changes_nothing(study: Study) -> None:
    client = MlflowClient(study.store.tracking_uri)

    def snapshot():
        exp = client.get_experiment_by_name("digits")
        runs = client.search_runs([exp.experiment_id], f"tags.study = '{study.name}'")
        return (sorted((r.info.run_id, r.info.status, r.info.end_time, len(r.data.metrics))
                       for r in runs),
                len(client.search_model_versions(f"name = '{study.name}-encoder'")),
                study.store.study_file(study.name).read_text())

    before = snapshot()
    code, console = study.resume()
    assert code == 0
    assert console.strip().splitlines() == [
        f"study {study.name} is complete (ended "
        + console.split("(ended ", 1)[1].split(")", 1)[0] + "); nothing to resume"]
    assert snapshot() == before


def resume_command(study: Study) -> str:
    return (f"python -m study.tune --dataset digits --study-name {study.name} --resume "
            f"--store {study.root}")


def check_stopped(study: Study, code: int, console: str, expected: int = 130) -> None:
    assert code == expected, console[-3000:]
    assert resume_command(study) in console, console[-3000:]
    assert study.store.load_study(study.name).get("completed", 0) == 0
    assert "best first by validation accuracy" not in console  # no end-of-study summary
    client = MlflowClient(study.store.tracking_uri)
    assert not client.search_model_versions(f"name = '{study.name}-encoder'")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["at-record", "a-second-later"])
def test_ctrl_c_before_any_trial_started(tmp_path, delay):
    study = Study(tmp_path, "before")
    proc = study.start()
    record = study.store.study_file(study.name)
    deadline = time.time() + 120
    while not record.exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.01)
    time.sleep(delay)
    signal_group(proc, signal.SIGINT)
    code, console = study.end(proc)
    check_stopped(study, code, console)
    assert "] finished" not in console
    study.complete()
    check_complete(study)


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_the_first_wave(tmp_path):
    study = Study(tmp_path, "mid", status_every=1)
    proc = study.start()
    study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
    signal_group(proc, signal.SIGINT)
    code, console = study.end(proc)
    check_stopped(study, code, console)
    assert ended(console.splitlines()) == 0
    # The console is the study's own: a line per trial event and a study line, nothing of
    # Ray's tables or start-up notes, which go to the study's log file with MLflow's and
    # Optuna's.
    assert re.search(r"\] started  K=\d+ tau=\S+ threshold=\S+\n", console)
    assert re.search(r"\] epoch 1/2 knn_val 0\.\d{4}\n", console)
    assert re.search(r"mid: \d done, \d running, \d pending \| \d+s elapsed", console)
    for noise in ("╭", "Trial status", "Token authentication", "View detailed results"):
        assert noise not in console, noise
    assert re.search(r" (INFO|WARNING) ray\.tune", study.store.log_file("mid").read_text())
    study.complete()
    check_complete(study)


@pytest.mark.slow
def test_ctrl_c_when_the_last_wave_has_just_started(tmp_path):
    """The issue's scenario: trials 1-2 ended, 3-4 just started. Then a completed study's
    --resume says so in one line and changes nothing."""
    study = Study(tmp_path, "last")
    proc = study.start()
    study.watch(proc, lambda lines: ended(lines) >= 2 and started(lines) >= 4)
    signal_group(proc, signal.SIGINT)
    code, console = study.end(proc)
    check_stopped(study, code, console)
    assert "2 of 4 trials ended" in console
    states = [t.state.name for ts in optuna_trials(study).values() for t in ts]
    assert "FAIL" not in states, states  # nothing Ray will resume was closed
    study.complete()
    check_complete(study)
    check_resume_of_a_complete_study_changes_nothing(study)


@pytest.mark.slow
def test_ctrl_c_twice(tmp_path):
    study = Study(tmp_path, "twice")
    proc = study.start()
    study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
    signal_group(proc, signal.SIGINT)
    time.sleep(0.3)
    signal_group(proc, signal.SIGINT)
    code, console = study.end(proc)
    check_stopped(study, code, console)
    study.complete()
    check_complete(study)


@pytest.mark.slow
def test_sigkill_twice_then_resume(tmp_path):
    study = Study(tmp_path, "killed")
    proc = study.start()
    study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    proc = study.start(resume=True)
    study.watch(proc, lambda lines: "] epoch" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    study.complete()
    check_complete(study)


@pytest.mark.slow
def test_sigkill_during_the_end_of_study_work(tmp_path):
    study = Study(tmp_path, "end")
    proc = study.start()
    study.watch(proc, lambda lines: "best first by validation accuracy" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    assert study.store.load_study(study.name).get("completed", 0) == 0
    console = study.complete()
    # Killed before the parent run was FINISHED (the usual case: registering takes seconds),
    # the resumed driver does the end-of-study work; after it, the work was done.
    assert ("finishing its end-of-study work" in console
            or f"study {study.name} is complete; nothing to resume" in console), console
    assert "] started" not in console and "] epoch" not in console  # nothing trained again
    check_complete(study)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on a loopback port; stopped and started again on that port."""

    def __init__(self, tmp_path: Path):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                    f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
                    str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
                    "--port", str(self.port)]
        self.log = tmp_path / "server.log"
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"), start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not come up: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_study(tmp_path):
    """The driver says the server does not answer, waits, and goes on once it is back; a
    Ctrl-C while it waits stops the study resumable; every trial's epochs reach MLflow."""
    server = MlflowServer(tmp_path)
    server.start()
    try:
        study = Study(tmp_path, "served", tracking_uri=server.uri)
        proc = study.start()
        study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
        server.stop()
        study.watch(proc, lambda lines: "does not answer" in lines[-1])
        time.sleep(6)  # at least one retry against the dead server
        server.start()
        study.watch(proc, lambda lines: "answers again" in lines[-1])
        # The server dies again, and this time the user stops the study while it waits.
        study.watch(proc, lambda lines: ended(lines) >= 2)
        server.stop()
        study.watch(proc, lambda lines: "does not answer" in lines[-1])
        signal_group(proc, signal.SIGINT)
        code, console = study.end(proc)
        server.start()
        check_stopped(study, code, console)
        study.complete()
        check_complete(study)
    finally:
        server.stop()


@pytest.mark.slow
def test_report_and_ui_read_the_store_while_a_study_writes_it(tmp_path):
    """SQLite in WAL mode: readers (the report, the UI's runs page in a browser) and the
    study's writer never meet "database is locked"."""
    study = Study(tmp_path, "busy", trials=8)
    # The UI is up before the study starts (a study now ends before a UI would start): the
    # store's schema and the data set's experiment first, so that the two never create them
    # at once.
    study.store.experiment_id("digits")
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "study.ui", "--store", str(study.root),
                           "--port", str(port)], stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / "ui.log", "w"), start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            assert time.time() < deadline, (tmp_path / "ui.log").read_text()[-2000:]
            time.sleep(0.5)
    proc = study.start()
    # The report needs a finished trial; the study goes on writing for more waves after it.
    study.watch(proc, lambda lines: lines[-1].rstrip().endswith("] finished"))
    browser = shutil.which("chromium")
    readers = []
    try:
        while proc.poll() is None and len(readers) < 6:
            report = subprocess.run(
                [sys.executable, "-m", "study.report", "--study", study.name, "--store",
                 str(study.root), "--out", str(tmp_path / "report")],
                capture_output=True, text=True, timeout=300)
            readers.append(("report", report.returncode, report.stdout + report.stderr))
            if browser is not None:
                url = f"http://127.0.0.1:{port}/#/experiments/1/runs?workflowType=machine_learning"
                page = subprocess.run(
                    [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
                     "--virtual-time-budget=10000", "--dump-dom", url],
                    capture_output=True, text=True, timeout=120)
                readers.append(("ui page", 0 if "busy" in page.stdout else 1, page.stdout))
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    code, console = study.end(proc)
    assert code == 0, console[-3000:]
    assert readers, "the study ended before any reader ran"
    for what, rc, out in readers:
        assert rc == 0 and "database is locked" not in out, (what, out[-2000:])
    assert "database is locked" not in (tmp_path / "ui.log").read_text()
    assert "database is locked" not in study.store.log_file(study.name).read_text()
    check_complete(study)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB file system of its own (tmpfs), where this machine lets a test mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_under_the_store(small_disk):
    """The disk fills while trials run: one line naming the path, exit 1, and once space is
    freed --resume completes the study with every invariant."""
    study = Study(small_disk, "full")
    proc = study.start()
    study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leaves 5 MB: below the study's floor, above any one write
        f.write(b"\0" * max(0, free - (5 << 20)))
    code, console = study.end(proc)
    check_stopped(study, code, console, expected=1)
    assert f"MB free under {study.root}" in console or "no space left on device" in console
    reason = [x for x in console.splitlines() if "free space there" in x]
    assert len(reason) == 1, console[-3000:]
    filler.unlink()
    study.complete()
    check_complete(study)


BEFORE_THE_CHANGE = "5de7d2e"  # main before the fault matrix and the study side's new layout


@pytest.mark.slow
def test_a_study_saved_by_the_previous_version_resumes(tmp_path):
    """A study started by main as it was before this layout (its pickled callbacks, searcher
    and plan record), killed mid-wave, completes under this checkout's --resume."""
    repo = Path(__file__).resolve().parents[1]
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE_THE_CHANGE],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {BEFORE_THE_CHANGE} is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    study = Study(tmp_path, "older")
    proc = study.start(code=old)
    study.watch(proc, lambda lines: "epoch 1/2" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    record = study.store.load_study(study.name)
    assert "completed" not in record  # written by the previous version
    study.complete()
    check_complete(study)

    # A study the previous version completed: one line, nothing changed.
    done = Study(tmp_path, "older-done")
    code, console = done.end(done.start(code=old))
    assert code == 0 and "completed" not in done.store.load_study(done.name)
    code, console = done.resume()
    assert code == 0
    assert console.strip().splitlines() == ["study older-done is complete; nothing to resume"]
