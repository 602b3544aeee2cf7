"""``python -m study.report``: a study's answer as one self-contained HTML file, from the store.

Reads MLflow (and Optuna for a search) and never re-trains. Writes ``report.html`` (figures
embedded, no network: it opens from disk), prints its tables, and logs the file into the study's
parent run (``report/report.html``), where the MLflow UI's artifact viewer shows it. What the
page holds: see the package's docstring (``study/report/__init__.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from study.engine.console import log, parser, run
from study.records.plan import Plan
from study.records.store import Store
from study.report.gather import gather_study
from study.report.page import ARTIFACT_DIR, REPORT_FILE, build, log_to_parent_run, write
from trainables.errors import ConfigError

TERMINAL_ROWS = 20  # a table's rows on the terminal; the HTML holds them all


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.report", __doc__)
    p.add_argument("--dataset", default=None,
                   help="with no --study: report this data set's latest study (default digits)")
    p.add_argument("--study", default=None, help="a study name (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="default: reports/<study>/")
    p.add_argument("--store", default="mlruns")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store = Store.at(args.store, args.tracking_uri)
    study = args.study or Plan.latest(store, args.dataset or "digits")
    record = gather_study(store, study)
    if args.dataset and record.dataset != args.dataset:
        raise ConfigError(f"study {study!r} is of {record.dataset}, not --dataset {args.dataset}")
    page, tables = build(store, record)
    path = write(page, (args.out or Path("reports") / study).resolve())
    for table in tables:
        log("\n" + table.text(limit=TERMINAL_ROWS))
    log_to_parent_run(store, record, path)
    log(f"\nwrote {path} ({len(page) // 1024} KiB, self-contained) and logged it to the study's "
        f"parent run as {ARTIFACT_DIR}/{REPORT_FILE}")
    return 0


if __name__ == "__main__":
    run(main, reader=True)
