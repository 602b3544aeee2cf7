"""Where Ray's, MLflow's and Optuna's own messages go during a study: the study's log file
(``mlruns/logs/<study>.log``), not the terminal. A user cannot act on them, and they bury the
study's own lines."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "py.warnings", "urllib3", "filelock")


def log_libraries_to(path: Path) -> None:
    """Ray's, MLflow's and Optuna's own records and Python's warnings go to ``path``, not the
    terminal: a user cannot act on them, and they bury the study's own lines.

    The libraries are imported first: MLflow and Ray set up their loggers when imported.
    """
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import ray.tune  # noqa: F401

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Ray Tune's newer console prints its own tables and paths even at verbose=0; the older one
    # is silent there.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    path.parent.mkdir(parents=True, exist_ok=True)
    # A record that cannot be written (a full disk) is dropped, not printed with a traceback:
    # the study says in one line why it stopped.
    logging.raiseExceptions = False
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in LIBRARY_LOGGERS]
    for name in sorted(set(names) | set(LIBRARY_LOGGERS)):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
            if isinstance(old, logging.FileHandler):
                old.close()
        if name in LIBRARY_LOGGERS:  # the top ones write the file; the others pass records up
            logger.addHandler(handler)
            logger.propagate = False
        else:
            logger.propagate = True


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """The process's file descriptor 2 goes to ``path`` for a block: Ray's core writes its
    start-up notes (token authentication, ...) there from C++, past Python's logging, and the
    processes Ray starts inherit it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
