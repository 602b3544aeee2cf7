"""``python -m study.export``: the best T (with tau) of a study, overall and for each K, as YAML.

Ranked by validation accuracy (linear evaluation, then the kNN monitor); test accuracy is
carried along, never used to choose. The file feeds back into ``python -m study.train --config``
and ``python -m study.tune --config`` (the chosen points, re-run with several seeds).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from study.engine.console import log, parser, run
from study.records.exported import export, load_export, points  # noqa: F401 (the file's API)
from study.records.plan import Plan
from study.records.store import Store
from trainables.specs import SPECS


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.export", __doc__)
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(SPECS)}")
    p.add_argument("--study", default=None, help="default: the latest study of --dataset")
    p.add_argument("--out", type=Path, default=None, help="default: best_<study>.yaml")
    p.add_argument("--store", default="mlruns")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    store = Store.at(args.store, args.tracking_uri)
    study = args.study or Plan.latest(store, args.dataset)
    data = export(store, args.dataset, study)
    out = args.out or Path(f"best_{study}.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    best = data["best"]
    log(f"best of {study}: T={best['config'].get('threshold')} tau={best['config'].get('tau')} "
        f"K={best['config'].get('K')}  linear val {best['linear_val_acc']:.4f} "
        f"test {best['linear_test_acc']:.4f}")
    missing = data.get("K_without_finished_trial", {})
    for K in sorted({*data["per_K"], *missing}):
        if K in missing:
            log(f"  K={K}: no best T: {missing[K]['why']}")
            continue
        e = data["per_K"][K]
        log(f"  K={K}: T={e['config'].get('threshold')} tau={e['config'].get('tau')}  "
            f"val {e['linear_val_acc']:.4f} test {e['linear_test_acc']:.4f}  "
            f"(best of {e['finished']} finished, {e['trials']} trial(s))")
    if "pareto" in data:
        names = [o["metric"] for o in data["objectives"]]
        log(f"Pareto front over {', '.join(names)}: {len(data['pareto'])} trial(s)")
        for e in data["pareto"]:
            c = e["config"]
            log(f"  K={c.get('K')} head={c.get('head', 'paper')} T={c.get('threshold')} "
                f"slope={c.get('threshold_slope', 0)} tau={c.get('tau')}  "
                + "  ".join(f"{n} {e['objectives'][n]:.4g}" for n in names))
    log(f"wrote {out}; reproduce with: python -m study.train --config {out}")
    return 0


if __name__ == "__main__":
    run(main, reader=True)
