"""Ctrl-C, and ``StudyStopped``: how a study stops, resumable (faults that stop it are in
``study.engine.faults``).

The driver owns SIGINT (Ray Tune's own handler is off, ``TUNE_DISABLE_SIGINT_HANDLER``):
- the first Ctrl-C while Ray Tune runs the trials asks Tune to stop through its other stop
  signal (SIGUSR1: Tune saves the experiment state one last time, stops the trials and returns);
  anywhere else it raises ``KeyboardInterrupt`` at once;
- a second Ctrl-C raises ``KeyboardInterrupt`` wherever the driver is;
- ``deferred()`` holds a Ctrl-C back while the driver writes what must be written together
  (the study's parent run and its record), and raises it right after;
- a ``KeyboardInterrupt`` raised while the main thread runs a weakref callback or a ``__del__``
  (an import's module-lock callback, say) is printed and dropped by Python ("Exception ignored
  in"): ``check()`` raises such a lost press again, and ``tune_running()`` calls it, so a
  Ctrl-C before the trials start never lets them run.
Either way the study is left resumable: whether it ended is read from Ray's saved state
(``study.records.ray_state``), never assumed.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StudyStopped(Exception):
    """The study cannot go on now but can be resumed: ``reason`` is one line for the user."""

    def __init__(self, reason: str, interrupted: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.interrupted = interrupted  # Ctrl-C (exit 130) rather than a fault (exit 1)


class _Stop:
    def __init__(self):
        self.presses = 0
        self.in_tune = False  # Ray Tune's loop runs: SIGUSR1 reaches its stop handler
        self.deferring = False
        self.deferred = False
        self.raised = 0  # presses raised as KeyboardInterrupt
        self.relayed = False

    def handler(self, signum, frame):
        self.presses += 1
        if self.deferring:
            self.deferred = True
            return
        if self.presses == 1 and self.in_tune and callable(signal.getsignal(signal.SIGUSR1)):
            # os.write, not print: a handler that writes through sys.stderr while the main
            # thread is inside a write to it raises "reentrant call".
            os.write(2, b"stopping: the running trials keep their last checkpoint, Ray Tune "
                        b"saves the study's state (Ctrl-C again to stop at once)\n")
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's experiment_interrupted_event
            return
        self.raised += 1
        raise KeyboardInterrupt


_STOP = _Stop()


@contextmanager
def handling_ctrl_c() -> Iterator[None]:
    """The driver's SIGINT handler for a block (the main thread's; elsewhere Python's)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STOP.__init__()
    previous = signal.signal(signal.SIGINT, _STOP.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _STOP.__init__()


def requested() -> bool:
    """Whether the user pressed Ctrl-C in this process."""
    return _STOP.presses > 0


def check() -> None:
    """Raise ``KeyboardInterrupt`` for a press raised outside Tune that the driver never saw.

    Code that reaches this point after such a press did not unwind from it: Python dropped it
    (a weakref callback, a ``__del__``) or a library caught it."""
    if _STOP.raised:
        raise KeyboardInterrupt


def relay() -> None:
    """At each step of Tune's loop: a press raised before Tune installed its stop handler and
    then dropped asks Tune to stop now, as a first press inside its loop does."""
    if _STOP.raised and not _STOP.relayed and callable(signal.getsignal(signal.SIGUSR1)):
        _STOP.relayed = True
        os.kill(os.getpid(), signal.SIGUSR1)


@contextmanager
def tune_running() -> Iterator[None]:
    """Around ``Tuner.fit()``: a first Ctrl-C asks Tune to stop rather than raising."""
    check()
    # Tune installs its SIGUSR1 handler when its loop starts and never removes it: one left
    # by an earlier study of this process would swallow the request.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    _STOP.in_tune = True
    try:
        yield
    finally:
        _STOP.in_tune = False


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C back for this block; raise it once the block is done."""
    _STOP.deferring, _STOP.deferred = True, False
    try:
        yield
    finally:
        _STOP.deferring = False
    if _STOP.deferred:
        _STOP.deferred = False
        _STOP.raised += 1
        raise KeyboardInterrupt


@contextmanager
def shielded() -> Iterator[None]:
    """A block a Ctrl-C must not cut (Ray's shutdown: interrupted half-way, its C++ core ends
    the process with status 1): presses are counted, not raised."""
    before = _STOP.deferring
    _STOP.deferring = True
    try:
        yield
    finally:
        _STOP.deferring = before
