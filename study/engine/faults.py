"""The faults that stop a study, resumable, each told apart in one place: a full disk (one
floor of free space, one detector of a full disk in an error) and a tracking server that stops
answering (the driver's MLflow calls, guarded: waited for, said on the console, retried every
few seconds). Either way nothing a trial reported is dropped, and the study stays resumable.

MLflow's own HTTP retries (urllib3, minutes of back-off, said only in the log file) are cut to
none: the wait is ours, so the console says what happens and Ctrl-C ends it.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from study.engine import interrupts
from study.engine.console import log
from study.engine.interrupts import StudyStopped

RETRY_S = 5.0
WAIT_ENV = "SLS_TRACKING_WAIT_S"  # how long to wait for a tracking server (default 30 min)
UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish",
               "Connection aborted", "Read timed out", "RemoteDisconnected")


def chain(e: BaseException | None) -> list[BaseException]:
    """``e`` and every exception it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while e is not None and all(e is not x for x in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def chain_text(e: BaseException) -> str:
    return " | ".join(f"{type(x).__name__}: {x}" for x in chain(e))


# -- a full disk: one floor, one detector --------------------------------------------------
FLOOR_BYTES = 8 << 20  # the least free space a study runs on; below it, a disk is full
DISK_FULL = ("no space left on device", "database or disk is full")  # OSError, SQLite


def says_disk_full(text: str) -> bool:
    """Whether an error's text (an exception chain, a trial's error file) says so."""
    return any(s in text.lower() for s in DISK_FULL)


def disk_full(e: BaseException) -> bool:
    """Whether a full disk is anywhere in ``e``'s chain (as an errno or as a message)."""
    if any(isinstance(x, OSError) and x.errno == errno.ENOSPC for x in chain(e)):
        return True
    return says_disk_full(chain_text(e))


def stopped_by(e: BaseException, store_root) -> StudyStopped | None:
    """The ``StudyStopped`` inside an error (Ray Tune re-raises a callback's exception as a
    ``TuneError`` of its traceback), or one for a full disk anywhere in its chain."""
    inner = next((x for x in chain(e) if isinstance(x, StudyStopped)), None)
    if inner is not None:
        return inner
    if disk_full(e):
        return StudyStopped(f"no space left on device under {store_root}; free space there")
    return None


def stop_if_disk_full(trial) -> None:
    """A trial that failed because its checkpoint found no space stops the study, before Ray
    spends its retries: every retry would fail the same way, and the study would end with
    trials in ERROR that more disk would have saved."""
    path = Path(getattr(trial, "path", None) or getattr(trial, "local_path", None) or ".")
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        error_file = getattr(trial, "error_file", None)
        text = Path(error_file).read_text() if error_file else ""
    except OSError:
        text = ""
    if says_disk_full(text) or shutil.disk_usage(path).free < FLOOR_BYTES:
        raise StudyStopped(f"no space left on device under {path} (trial {trial.trial_id} "
                           f"was writing its checkpoint); free space there")


class DiskFloor:
    """Stops the study, resumable, while the store's disk still has room for what is being
    written: a write that meets a full disk mid-way can cut Ray Tune's saved experiment state
    short, and that state is what ``--resume`` continues from.

    The floor is twice the largest trial checkpoint seen (a trial writes one at a time), at
    least ``FLOOR_BYTES``. Checked at most once a second, from Tune's loop (``on_step_begin``).
    """

    def __init__(self, root: str, floor: int = FLOOR_BYTES, every_s: float = 1.0):
        self.root = root
        self.min_floor = floor
        self.largest = 0  # bytes of the largest trial checkpoint seen
        self.every_s = every_s
        self.last = 0.0

    @property
    def floor(self) -> int:
        return max(self.min_floor, 2 * self.largest)

    def on_checkpoint(self, checkpoint_path: str) -> None:
        size = sum(f.stat().st_size for f in _files(checkpoint_path))
        self.largest = max(self.largest, size)

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self.last < self.every_s:
            return
        self.last = now
        free = shutil.disk_usage(self.root).free
        if free < self.floor:
            raise StudyStopped(
                f"only {free / 2**20:.1f} MB free under {self.root}; the study needs "
                f"{self.floor / 2**20:.0f} MB to write its next checkpoints safely; free space "
                f"there")


def _files(path: str):
    p = Path(path)
    return [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else []


# -- a tracking server that does not answer ---------------------------------------------------
def quiet_http_retries() -> None:
    """Fail an MLflow HTTP call in seconds, not minutes: ``GuardedClient`` retries it. And no
    run's address printed each time the driver closes a run on a tracking server (two lines a
    trial on the study's console, and one more request each)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class GuardedClient:
    """An ``MlflowClient`` whose every call waits out an unreachable server and turns a full
    disk into ``StudyStopped``."""

    def __init__(self, client, uri: str, wait_s: float | None = None, sleep=time.sleep):
        self._client = client
        self._uri = uri
        self._wait_s = float(os.environ.get(WAIT_ENV, 1800)) if wait_s is None else wait_s
        self._sleep = sleep

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: self.call(name, method, *args, **kwargs)

    def call(self, what: str, fn, *args, **kwargs):
        since = None
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as e:  # MLflow wraps what it meets: read the whole chain
                text = chain_text(e)
                if disk_full(e):
                    raise StudyStopped(
                        f"no space left on device while MLflow wrote ({what}) to {self._uri}; "
                        f"free space there") from None
                if not any(s in text for s in UNREACHABLE):
                    raise
                now = time.monotonic()
                if since is None:
                    since = now
                    log(f"MLflow at {self._uri} does not answer ({what}); retrying every "
                        f"{RETRY_S:g} s for up to {self._wait_s / 60:g} min. Ctrl-C stops the "
                        f"study, resumable")
                if interrupts.requested():
                    raise StudyStopped(f"interrupted while MLflow at {self._uri} did not "
                                       f"answer", interrupted=True) from None
                if now - since >= self._wait_s:
                    raise StudyStopped(
                        f"MLflow at {self._uri} did not answer for {(now - since) / 60:.0f} "
                        f"min ({what})") from None
                self._sleep(RETRY_S)
                continue
            if since is not None:
                log(f"MLflow at {self._uri} answers again after "
                    f"{time.monotonic() - since:.0f} s; the study goes on")
            return out


def unreachable(e: BaseException, uri: str) -> StudyStopped | None:
    """A stop for an MLflow call outside ``GuardedClient`` (the end-of-study work) that found
    no server: the record does not say ``completed``, so ``--resume`` does that work again."""
    text = chain_text(e)
    if "mlflow" in text.lower() and any(s in text for s in UNREACHABLE):
        return StudyStopped(f"MLflow at {uri} does not answer")
    return None
