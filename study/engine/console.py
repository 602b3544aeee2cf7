"""The study's console: progress lines on stderr (``log``), and what every command shares:
one-line errors for bad input, its flags' parser, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from trainables.errors import ConfigError, DataError


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None,
        reader: bool = False) -> None:
    """Run a command's ``main``; a bad value or missing data ends in one line, not a traceback.

    ``reader``: a command that reads the store and ends (``study.report``, ``study.export``)
    runs without Python's cyclic garbage collector. What it allocates is freed by reference
    counting: the same peak memory with the collector off (``study.report`` at 10,000 trials:
    1.14 GB either way), and none of the collector's scans of every object that MLflow's and
    matplotlib's imports and a bulk read make (about a second of ``study.report``'s 5.5 at
    1000 trials)."""
    if reader:
        import gc

        gc.disable()
    try:
        code = main(argv)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other bad value."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser(prog: str, doc: str) -> Parser:
    return Parser(prog=prog, description=(doc.strip().splitlines() or [""])[0])


def threshold_arg(text: str) -> float | None:
    """``--threshold``: a number, or ``none`` for Eq. (1)."""
    if text.lower() in ("none", "null", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number in [-1, 1] or 'none'"
        ) from None


def print_json(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` output stays one clean line on stdout."""
    print(message, file=sys.stderr, flush=True)
