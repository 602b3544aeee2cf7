"""``python -m study.ui``: the MLflow UI on the study store, at 127.0.0.1.

The same as ``mlflow ui --backend-store-uri sqlite:///<abs>/mlruns/mlflow.db --host 127.0.0.1``.
"""

from __future__ import annotations

import os
import sys

from study._cli import log, parser, run
from study.store import Store


def command(store: Store, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri,
            "--host", "127.0.0.1", "--port", str(port)]


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.ui", __doc__)
    p.add_argument("--store", default="mlruns")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    cmd = command(Store.at(args.store), args.port)
    log(" ".join(cmd[1:]))
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    run(main)
