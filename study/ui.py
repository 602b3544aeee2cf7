"""``python -m study.ui``: the MLflow UI on the study store, at 127.0.0.1.

The same as ``mlflow ui --backend-store-uri sqlite:///<abs>/mlruns/mlflow.db --host 127.0.0.1``,
plus the address of each data set's runs. MLflow 3.17 opens an experiment on its GenAI view
(traces, token usage); ``workflowType=machine_learning`` in the address opens the runs table
("Model training" view), with each study's trials folded under its parent run.
"""

from __future__ import annotations

import os

from study.engine.console import log, parser, run
from study.records.browse import experiments, runs_url, ui_command
from study.records.store import Store


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.ui", __doc__)
    p.add_argument("--store", default="mlruns")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--dataset", default=None, help="print only this data set's address")
    args = p.parse_args(argv)
    store = Store.at(args.store)
    cmd = ui_command(store, args.port)
    log(" ".join(cmd[1:]))
    for name, experiment_id in experiments(store, args.dataset).items():
        log(f"the runs of {name}: {runs_url(experiment_id, args.port)}")
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    run(main)
