"""The study's console: a line per trial event and a study line now and then (Ray Tune's own
tables are off); each step of Tune's loop also relays a Ctrl-C and checks the disk's floor."""

from __future__ import annotations

import time

from ray.tune import Callback

from study.engine import interrupts
from study.engine.console import log
from study.engine.faults import DiskFloor
from study.records.params import format_params
from trainables.tune_trainable import FINAL, FINISHED, METRICS, OBJECTIVE


class Progress(Callback):
    """The study's console: one line per trial event (started, epoch, finished, stopped early,
    failed, retried) and, every ``status_every`` seconds, one study line: trials done / running /
    pending, the best so far with its parameters, the time elapsed and an estimate of the time
    left from the measured epoch times. Ray's own result tables are off (``verbose=0``)."""

    # What a study pickled by an older version lacks when it resumes.
    trials, concurrency, status_every, study, best, disk = 0, 1, 60.0, "study", None, None

    def __init__(self, epochs: int, trials: int = 0, concurrency: int = 1,
                 status_every: float = 60.0, study: str = "study", clock=time.monotonic,
                 disk: DiskFloor | None = None):
        self.epochs = epochs  # 0: each trial's own (a re-run of exported points)
        self.trials = trials
        self.concurrency = concurrency
        self.status_every = status_every
        self.study = study
        self.clock = clock
        self.started = clock()
        self.last_status = self.started
        self.epoch_seconds: list[float] = []
        self.best: tuple[float, str, str] | None = None  # (objective, trial id, parameters)
        self.disk = disk  # stops the study while its store's disk still has room

    def __getstate__(self) -> dict:
        # Pickled with the study for --resume: the clock is this process's, not data.
        return {k: v for k, v in self.__dict__.items() if k != "clock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.epoch_seconds = state.get("epoch_seconds", [])
        self.clock = time.monotonic
        self.started = self.last_status = self.clock()

    def on_trial_start(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] started  {trial_params(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        seconds = result.get(METRICS, {}).get("epoch_seconds")
        if seconds is not None:
            self.epoch_seconds.append(float(seconds))
        objective = result.get(OBJECTIVE)  # None: an epoch the monitor skips (monitor_every)
        epochs = self.epochs or trial.config.get("point", {}).get("epochs", "?")
        line = (f"[{trial.trial_id}] epoch {result.get('epoch')}/{epochs} "
                + (f"knn_val {objective:.4f}" if objective is not None else "(no kNN monitor)"))
        final = result.get(FINAL, {})
        if "linear_val_acc" in final:
            line += (f"  linear val {final['linear_val_acc']:.4f} "
                     f"test {final.get('linear_test_acc', float('nan')):.4f}")
        if result.get("diverged"):
            line += "  diverged (non-finite loss)"
        elif objective is not None and (self.best is None or objective > self.best[0]):
            self.best = (objective, trial.trial_id, trial_params(trial.config))
        log(line)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get(FINISHED):
            log(f"[{trial.trial_id}] finished")
        else:
            log(f"[{trial.trial_id}] stopped early at epoch {result.get('epoch')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] failed; see {trial.error_file or 'the trial log under ray/'}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] failed; Ray retries it from its last checkpoint")

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.disk is not None:
            self.disk.on_checkpoint(checkpoint.path)

    def on_step_begin(self, iteration, trials, **info):
        interrupts.relay()
        if self.disk is not None:
            self.disk.check()

    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        if now - self.last_status >= self.status_every:
            self.last_status = now
            log(self.status(trials, now))

    def status(self, trials, now: float) -> str:
        states = [t.status for t in trials]
        done = sum(s in ("TERMINATED", "ERROR") for s in states)
        running = states.count("RUNNING")
        pending = max(0, self.trials - done - running) if self.trials else states.count("PENDING")
        line = (f"{self.study}: {done} done, {running} running, {pending} pending"
                f" | {_duration(now - self.started)} elapsed")
        left = self.time_left(trials, pending)
        if left is not None:
            line += f", about {_duration(left)} left"
        if self.best is not None:
            line += f" | best knn_val {self.best[0]:.4f} [{self.best[1]}] {self.best[2]}"
        return line

    def time_left(self, trials, pending: int) -> float | None:
        """Epochs still to train times the mean measured epoch, spread over the concurrency;
        an upper bound where early stopping may end trials sooner. None before any epoch."""
        if not self.epoch_seconds or not self.epochs:
            return None
        remaining = pending * self.epochs + sum(
            max(0, self.epochs - int((t.last_result or {}).get("epoch", 0)))
            for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED"))
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return remaining * mean / max(1, self.concurrency)


def trial_params(config: dict) -> str:
    """What tells a trial apart as ``k=v`` pairs: its searchable values and seed (a grid cell's
    or an exported point's flattened; an exported point's fixed settings left out)."""
    from study.spaces.types import SEARCHABLE

    flat = {**config.get("point", {}), **{k: v for k, v in config.items() if k != "point"}}
    return format_params(dict(sorted((k, v) for k, v in flat.items()
                                     if k in SEARCHABLE or k == "seed")))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
