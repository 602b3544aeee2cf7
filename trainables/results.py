"""Everything measured at the end of a run, as numbers, arrays and files.

Linear evaluation is the probe of the last block: the same pooled final representation, so it is
trained once. Spectra are taken over the validation split (held out of pre-training).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainables.cost import block_costs, cost_summary
from trainables.evaluation import (
    BlockFeatures,
    block_spectra,
    effective_rank,
    probe_blocks,
)
from trainables.paper import PROTOCOL
from trainables.plots import plot_kept_ratios, plot_probes, plot_spectra
from trainables.trainer import Trainer


def final_report(
    trainer: Trainer,
    linear_epochs: int = PROTOCOL.linear_epochs,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """Linear evaluation, probes, spectra, cost; returns (metrics, spectra) and writes files."""
    say = log or (lambda _: None)
    data, model = trainer.data, trainer.model
    say(f"linear probes on {model.K} block(s), {linear_epochs} epochs each")
    feats = BlockFeatures.compute(model, data, trainer.normalize, bf16=trainer.bf16)
    probes = probe_blocks(feats, data, epochs=linear_epochs, seed=trainer.cfg.seed)
    spectra = block_spectra(feats.val)
    spec = data.spec
    costs = block_costs(model, (spec.channels, spec.size, spec.size))
    metrics = {
        "linear_train_acc": probes[-1].train_acc,
        "linear_val_acc": probes[-1].val_acc,
        "linear_test_acc": probes[-1].test_acc,
        "probe_val_acc": [p.val_acc for p in probes],
        "probe_test_acc": [p.test_acc for p in probes],
        "effective_rank": [effective_rank(s) for s in spectra],
        **cost_summary(costs),
        # Measured on CUDA only: the total, and the training steps' own part of it.
        "peak_memory_bytes": _peak(trainer.history, "peak_memory_bytes"),
        "peak_step_memory_bytes": _peak(trainer.history, "peak_step_memory_bytes"),
    }
    if out_dir is not None:
        write_report(Path(out_dir), trainer, metrics, spectra)
        say(f"wrote arrays, plots and metrics.json to {out_dir}")
    return metrics, spectra


def _peak(history: list[dict], key: str) -> int | None:
    values = [r[key] for r in history if r.get(key) is not None]
    return max(values) if values else None


def write_report(out: Path, trainer: Trainer, metrics: dict, spectra: list[np.ndarray]) -> None:
    (out / "spectra").mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(spectra):
        np.save(out / "spectra" / f"block_{k + 1}.npy", s)
    c = trainer.cfg
    plot_spectra(
        spectra, [f"block {k + 1}" for k in range(len(spectra))], out / "spectra" / "spectra.png",
        title=f"{c.dataset} {c.arch} K={c.K} T={c.threshold}: spectrum per block",
    )
    if trainer.history:
        plot_kept_ratios(trainer.history, out / "kept_ratios.png")
    plot_probes(metrics["probe_val_acc"], metrics["probe_test_acc"], out / "probes.png")
    (out / "metrics.json").write_text(json.dumps(
        {"config": c.to_dict(), **metrics, "history": trainer.history}, indent=1
    ))
