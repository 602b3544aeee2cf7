"""``python -m study.toy``: the toy linear model of Sec. 3.2 (Fig. 1a), one run per threshold.

Prints, per run, the normalised singular values of the representations' covariance, the count
below the collapse cut-off and the mean log10 of the 8 augmented dimensions' values (both
readings: on the paper's log scale the tail rises with T long before it crosses a cut-off).
"""

from __future__ import annotations

from pathlib import Path

from study.engine.console import log, parser, print_json, run, threshold_arg
from trainables.errors import ConfigError
from trainables.plots import plot_spectra
from trainables.toy_model import COLLAPSE_CUTOFF, ToyConfig, train_toy

DEFAULTS = ToyConfig()


def thresholds_arg(text: str) -> list[float | None]:
    values = [threshold_arg(t.strip()) for t in text.split(",") if t.strip()]
    for t in values:
        if t is not None and not -1.0 <= t <= 1.0:
            raise ConfigError(f"threshold {t} is outside [-1, 1] (or 'none' for Eq. (1))")
    return values


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.toy", __doc__)
    p.add_argument("--sigma", type=float, default=DEFAULTS.sigma, help="augmentation strength")
    p.add_argument("--thresholds", default="none,0.0,0.5",
                   help="comma-separated T values; 'none' is Eq. (1)")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps)
    p.add_argument("--tau", type=float, default=DEFAULTS.tau)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    p.add_argument("--out", type=Path, default=None, help="write the Fig. 1a plot here")
    args = p.parse_args(argv)
    thresholds = thresholds_arg(args.thresholds)
    if args.steps < 1 or args.sigma < 0:
        raise ConfigError(f"--steps {args.steps} must be >= 1 and --sigma {args.sigma} >= 0")
    cfg = ToyConfig(sigma=args.sigma, tau=args.tau, lr=args.lr, steps=args.steps, seed=args.seed)
    runs = []
    for t in thresholds:
        r = train_toy(t, cfg)
        runs.append(r)
        log(
            f"T={'none' if t is None else t:>5}  collapsed (<{COLLAPSE_CUTOFF}) {r.collapsed:>2}/16"
            f"  augmented dims mean log10 {r.augmented_log10:7.2f}"
            f"  kept+ {r.kept_pos:.3f}  kept- {r.kept_neg:.3f}"
        )
    if args.out is not None:
        path = plot_spectra(
            [r.singular_values for r in runs],
            [f"T = {'none' if r.threshold is None else r.threshold}" for r in runs],
            args.out / "toy_spectra.png",
            title=f"Toy linear model, sigma = {args.sigma}, {args.steps} steps",
        )
        log(f"wrote {path}")
    if args.json:
        print_json({"sigma": args.sigma, "steps": args.steps, "runs": [r.to_dict() for r in runs]})
    return 0


if __name__ == "__main__":
    run(main)
