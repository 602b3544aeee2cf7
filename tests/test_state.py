"""Where a study stands (Ray Tune's saved state), how it stops (Ctrl-C), and the guarded
MLflow calls: the rules the fault matrix (tests/test_faults.py) runs end to end, here in
milliseconds."""

import errno
import json
import signal
import weakref
from pathlib import Path

import pytest

from study.engine import faults, interrupts
from study.engine.faults import GuardedClient
from study.records.ray_state import saved_state
from trainables.errors import ConfigError


def _write_state(path, trials):
    """An experiment state in Ray Tune 2.60's layout: (trial JSON, runtime JSON) pairs."""
    path.mkdir(parents=True, exist_ok=True)
    data = {"trial_data": [
        [json.dumps({"trial_id": i, "status": s, "max_failures": 2}),
         json.dumps({"num_failures": f})] for i, s, f in trials]}
    (path / "experiment_state-2026-12-02_10-00-00.json").write_text(json.dumps(data))


@pytest.mark.parametrize("trials,complete", [
    ([("a", "TERMINATED", 0), ("b", "TERMINATED", 0)], True),
    ([("a", "TERMINATED", 0), ("b", "ERROR", 3)], True),  # retries spent: ended
    # Failed while PENDING with retries left: Ray restores it ERROR (resume_errored=False).
    ([("a", "TERMINATED", 0), ("b", "ERROR", 1)], True),
    ([("a", "TERMINATED", 0), ("b", "RUNNING", 0)], False),  # interrupted, not ended
    ([("a", "TERMINATED", 0), ("b", "PENDING", 0)], False),
    ([("a", "TERMINATED", 0)], False),  # the searcher has not made trial 2 yet
])
def test_a_study_is_complete_only_when_every_planned_trial_ended(tmp_path, trials, complete):
    _write_state(tmp_path, trials)
    assert saved_state(tmp_path, planned=2).complete is complete


def test_where_a_stopped_study_stands_in_one_phrase(tmp_path):
    assert saved_state(tmp_path, 4) is None  # Ray saved nothing yet
    _write_state(tmp_path, [("a", "TERMINATED", 0), ("b", "TERMINATED", 0),
                            ("c", "RUNNING", 0)])
    assert saved_state(tmp_path, 4).describe() == (
        "2 of 4 trials ended (2 TERMINATED); 1 to continue (1 RUNNING); 1 not started")


def test_a_cut_short_state_is_one_line(tmp_path):
    _write_state(tmp_path, [("a", "TERMINATED", 0)])
    f = next(tmp_path.glob("experiment_state-*.json"))
    f.write_text(f.read_text()[:40])
    with pytest.raises(ConfigError, match="is cut short"):
        saved_state(tmp_path, 1)


def test_ctrl_c_is_held_back_while_the_record_is_written():
    done = []
    with interrupts.handling_ctrl_c():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                done.append("the block went on")
        assert done and interrupts.requested()


def test_outside_tune_ctrl_c_raises_at_once():
    with interrupts.handling_ctrl_c(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def _drop_a_press() -> None:
    """Ctrl-C while a weakref callback runs: Python prints the exception and drops it."""
    class Dropped:
        pass

    obj = Dropped()
    ref = weakref.ref(obj, lambda _: signal.raise_signal(signal.SIGINT))
    del obj
    assert ref() is None and interrupts.requested()  # the code went on past the press


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_dropped_still_stops_the_study_before_tune():
    """Seen in CI: the press landed in importlib's module-lock weakref callback, Python printed
    "Exception ignored in" and the study ran every trial and exited 0."""
    with interrupts.handling_ctrl_c():
        _drop_a_press()
        with pytest.raises(KeyboardInterrupt), interrupts.tune_running():
            raise AssertionError("Tune ran after a Ctrl-C")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_press_dropped_as_tune_starts_asks_tune_to_stop_at_its_first_step():
    asked = []
    try:
        with interrupts.handling_ctrl_c(), interrupts.tune_running():
            _drop_a_press()  # before Tune installed its handler: raised, and dropped
            signal.signal(signal.SIGUSR1, lambda *_: asked.append("stop"))  # Tune's loop starts
            interrupts.relay()
            interrupts.relay()  # once is the request
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert asked == ["stop"]


class Flaky:
    """A client whose calls fail ``n`` times with ``error``, then answer."""

    def __init__(self, n, error):
        self.n, self.error, self.calls = n, error, 0

    def log_batch(self, run_id):
        self.calls += 1
        if self.calls <= self.n:
            raise self.error
        return run_id


def _unreachable():
    from mlflow.exceptions import MlflowException

    return MlflowException("API request to http://127.0.0.1:1/api failed with exception "
                           "HTTPConnectionPool: Max retries exceeded (Connection refused)")


def test_an_unreachable_server_is_waited_for_and_said(capsys):
    flaky = Flaky(3, _unreachable())
    client = GuardedClient(flaky, "http://127.0.0.1:1", wait_s=60, sleep=lambda s: None)
    assert client.log_batch("r") == "r" and flaky.calls == 4
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("MLflow at http://127.0.0.1:1 does not answer (log_batch)")
    assert err[1].startswith("MLflow at http://127.0.0.1:1 answers again")
    assert len(err) == 2  # one line when it goes, one when it is back


def test_waiting_ends_in_a_resumable_stop(capsys):
    client = GuardedClient(Flaky(10**6, _unreachable()), "http://x:1", wait_s=0,
                           sleep=lambda s: None)
    with pytest.raises(interrupts.StudyStopped, match="did not answer") as e:
        client.log_batch("r")
    assert not e.value.interrupted


def test_a_full_disk_is_one_reason_and_other_errors_pass():
    full = GuardedClient(Flaky(1, OSError(errno.ENOSPC, "No space left on device")), "sqlite:///x")
    with pytest.raises(interrupts.StudyStopped, match="no space left on device"):
        full.log_batch("r")
    other = GuardedClient(Flaky(1, ValueError("bad metric")), "sqlite:///x")
    with pytest.raises(ValueError):
        other.log_batch("r")


def test_a_stop_raised_in_a_callback_is_found_inside_rays_error():
    try:
        try:
            raise interrupts.StudyStopped("no space left on device under /s")
        except Exception:
            raise RuntimeError("Traceback ...")  # noqa: B904  (as Ray raises its TuneError)
    except RuntimeError as wrapped:
        assert faults.stopped_by(wrapped, "/s").reason == "no space left on device under /s"
    assert faults.stopped_by(OSError(errno.ENOSPC, "full"), "/s").reason.startswith(
        "no space left on device under /s")
    assert faults.stopped_by(ValueError("x"), "/s") is None


TRAINABLE = """
import os, sys, tempfile
from ray import tune

def trainable(config):
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if os.path.exists(os.path.join(d, "final.json")):
                tune.report({"it": 99, "score": 1.0})
                return
            start = int(open(os.path.join(d, "it")).read())
    for it in range(start + 1, 6):
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "it"), "w").write(str(it))
            tune.report({"it": it, "score": it}, checkpoint=tune.Checkpoint.from_directory(d))
"""
KILLED_IN_COMPLETE = TRAINABLE + """
import ray
from ray.tune.schedulers import ASHAScheduler

from study.engine.checkpoints import LatestCheckpointOnly

class Die(tune.Callback):
    def on_trial_complete(self, iteration, trials, trial, **info):
        if os.environ.get("DIE_IN_COMPLETE"):  # pickled with the tuner: not on restore
            os._exit(3)  # the driver dies while a trial ends (its report going to MLflow)

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
tune.Tuner(trainable, tune_config=tune.TuneConfig(
               scheduler=ASHAScheduler(time_attr="it", metric="score", mode="max", max_t=3),
               num_samples=1),
           run_config=tune.RunConfig(name="x", storage_path=sys.argv[1], verbose=0,
                                     checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                                     callbacks=[LatestCheckpointOnly(), Die()])).fit()
"""


@pytest.mark.slow
def test_a_driver_killed_while_a_trial_ends_resumes_it(ray_session, tmp_path):
    """A trial's previous checkpoint is deleted when the next arrives (study.engine.checkpoints),
    and Ray saves the state naming it seconds later: the repaired state restores the trial from what
    is on disk."""
    import os
    import subprocess
    import sys

    from ray import tune

    from study.engine.resume.checkpoint_repair import repair_checkpoints

    res = subprocess.run([sys.executable, "-c", KILLED_IN_COMPLETE, str(tmp_path)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DIE_IN_COMPLETE": "1"})
    assert res.returncode == 3, res.stderr[-2000:]
    experiment = tmp_path / "x"
    state = saved_state(experiment, 1)
    assert [t.status for t in state.trials] in (["PENDING"], ["RUNNING"])  # Ray's last save
    # A checkpoint the trial was still writing when the driver died (a full disk): never
    # registered, so never resumed from.
    (trial_dir,) = [d for d in experiment.iterdir() if d.is_dir() and d.name.startswith("tr")]
    (trial_dir / "checkpoint_000099").mkdir()
    (trial_dir / "checkpoint_000099" / "it").write_text("cut sh")
    assert repair_checkpoints(experiment) == [state.trials[0].trial_id]
    assert repair_checkpoints(experiment) == []  # once is enough

    exec_globals: dict = {}
    exec(TRAINABLE, exec_globals)
    results = tune.Tuner.restore(str(experiment), exec_globals["trainable"],
                                 resume_errored=False).fit()
    assert not results.errors, results.errors
    assert results[0].metrics["it"] == 4  # on from its checkpoint at it = 3, not from scratch
    assert saved_state(experiment, 1).complete


@pytest.mark.slow
def test_each_trial_keeps_its_latest_checkpoint_only(ray_session, tmp_path):
    from ray import tune

    from study.engine.checkpoints import LatestCheckpointOnly

    exec_globals: dict = {}
    exec(TRAINABLE, exec_globals)
    grid = tune.Tuner(exec_globals["trainable"], tune_config=tune.TuneConfig(num_samples=2),
                      run_config=tune.RunConfig(
                          name="x", storage_path=str(tmp_path), verbose=0,
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                          callbacks=[LatestCheckpointOnly()])).fit()
    for result in grid:  # five checkpoints each, the last one kept, and Ray holds just it
        on_disk = sorted(p.name for p in Path(result.path).glob("checkpoint_*"))
        assert on_disk == ["checkpoint_000004"], on_disk
        assert Path(result.checkpoint.path).name == "checkpoint_000004"
        assert [Path(c.path).name for c, _ in result.best_checkpoints] == ["checkpoint_000004"]
    assert saved_state(tmp_path / "x", 2).complete


def test_any_other_failure_is_one_line_with_its_traceback_in_the_log(tmp_path):
    from study.tune import failure_line

    try:
        raise RuntimeError("database disk image is malformed\nmore detail")
    except RuntimeError as e:
        line = failure_line(e, tmp_path / "logs" / "s.log")
    assert line == (f"failed: RuntimeError: database disk image is malformed "
                    f"(traceback in {tmp_path / 'logs' / 's.log'})")
    assert "Traceback (most recent call last)" in (tmp_path / "logs" / "s.log").read_text()


def test_a_stop_in_on_trial_complete_reaches_the_driver_through_the_next_failure_hook():
    """Ray turns what on_trial_complete raises into a trial failure and calls on_trial_recover
    (or on_trial_error), which it lets through: the stop is raised again there."""
    from study.engine.tracking import MlflowTracking

    tracking = MlflowTracking.__new__(MlflowTracking)
    tracking._stop = None

    def complete(trial):
        raise interrupts.StudyStopped("no space left on device while MLflow wrote")

    tracking._complete = complete
    with pytest.raises(interrupts.StudyStopped):
        tracking.on_trial_complete(0, [], object())
    with pytest.raises(interrupts.StudyStopped, match="no space left"):
        tracking.on_trial_recover(0, [], object())
    tracking._raise_stop()  # raised once: nothing left


def test_a_full_disk_is_told_by_its_message_as_by_its_errno(tmp_path):
    """One detector: SQLite's and the OS's words for a full disk, anywhere in an error's chain or
    in a failed trial's error file, stop the study; other errors do not."""
    import sqlite3
    from types import SimpleNamespace

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("MLflow could not write") from inner
    except RuntimeError as e:
        assert faults.disk_full(e)
        assert faults.stopped_by(e, "/s").reason == (
            "no space left on device under /s; free space there")
    assert not faults.disk_full(ValueError("database is locked"))
    error_file = tmp_path / "error.txt"
    error_file.write_text("OSError: [Errno 28] No space left on device: 'checkpoint_000002'")
    trial = SimpleNamespace(path=str(tmp_path), error_file=str(error_file), trial_id="t1")
    with pytest.raises(interrupts.StudyStopped, match="trial t1 was writing its checkpoint"):
        faults.stop_if_disk_full(trial)
    error_file.write_text("ValueError: loss is nan")
    faults.stop_if_disk_full(trial)  # free space above the floor, another error: no stop
