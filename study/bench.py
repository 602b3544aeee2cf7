"""``python -m study.bench``: speed and memory of the training core, measured side by side.

Warm-up first, then the median of several repeats; CUDA timings are device-synchronised. Every
figure is measured on this run's device; what cannot be measured here (peak memory and packing
need CUDA) is reported as null with the reason, never estimated.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from study.benchmarks.gpu_packing import bench_packing
from study.benchmarks.study_speed import bench_tune
from study.benchmarks.training_speed import (
    CASES,
    bench_augment,
    bench_checkpoints,
    bench_subsample,
    bench_training,
    peak_matmul_flops,
)
from study.engine.console import log, parser, print_json, run
from trainables.trainer import resolve_device


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.bench", __doc__)
    p.add_argument("--quick", action="store_true",
                   help="narrow networks and small batches (for a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    p.add_argument("--skip-tune", action="store_true", help="leave out tune_overhead (no Ray)")
    p.add_argument("--pipeline", action="store_true",
                   help="also the pipelined trainer: ResNet-18 K = 8 over 2 stage processes "
                        "against the sequential step")
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    p.add_argument("--monitor", action="store_true",
                   help="only the kNN monitor: a cheap one (--monitor-images) against the full "
                        "one on real data, their cost and the Spearman correlation of their "
                        "rankings over trials")
    p.add_argument("--bookkeeping", action="store_true",
                   help="only the bookkeeping benchmark: a real study (Ray Tune, Optuna, ASHA, "
                        "our console and MLflow tracking, then summary, export, report, Pareto "
                        "front and the UI's runs page) whose trials train nothing")
    p.add_argument("--trials", type=int, default=1000, help="with --bookkeeping")
    p.add_argument("--K", type=int, default=4, help="with --bookkeeping")
    p.add_argument("--concurrency", type=int, default=4, help="with --bookkeeping")
    p.add_argument("--tracking-uri", default=None,
                   help="with --bookkeeping: an MLflow server (default: SQLite in a temporary "
                        "store)")
    p.add_argument("--no-ui", action="store_true", help="with --bookkeeping: skip the UI page")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="with --bookkeeping: keep its stores in DIR (default: a temporary one)")
    p.add_argument("--copies", type=int, default=1, metavar="N",
                   help="with --bookkeeping: then copy the finished study's trials until the "
                        "store holds N times as many (SQLite only) and time the readers again")
    p.add_argument("--dataset", default="fmnist", help="with --monitor (default fmnist)")
    p.add_argument("--data-dir", default="data", help="with --monitor")
    p.add_argument("--configs", type=int, default=8, help="with --monitor: trials")
    p.add_argument("--epochs", type=int, default=None,
                   help="with --monitor (default 3) or --bookkeeping (default 20)")
    p.add_argument("--monitor-images", type=int, default=1000, help="with --monitor")
    p.add_argument("--subset", type=int, default=4000,
                   help="with --monitor: labelled train images (the laptop budget's)")
    p.add_argument("--width", type=float, default=0.25, help="with --monitor")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.bookkeeping:
        from study.benchmarks.bookkeeping import bookkeeping

        result = bookkeeping(args.trials, args.epochs or 20, args.K, args.tracking_uri,
                             args.concurrency, ui=not args.no_ui, root=args.keep,
                             copies=args.copies)
        log("bookkeeping (everything but the training): " + ", ".join(
            f"{k} {v:.3g}" for k, v in result.items() if isinstance(v, float)))
        if args.json:
            print_json(result)
        return 0
    if args.monitor:
        from study.benchmarks.training_speed import bench_monitor

        result = bench_monitor(args.dataset, args.data_dir, args.configs, args.epochs or 3,
                               args.monitor_images, args.subset, args.width, device)
        log(f"monitor over epoch: full {result['monitor_full_over_epoch']:.3f}, cheap "
            f"({args.monitor_images} images) {result['monitor_cheap_over_epoch']:.3f}; "
            f"Spearman cheap vs full per epoch "
            + " ".join(f"{r:.2f}" for r in result["spearman_per_epoch"]))
        if args.json:
            print_json(result)
        return 0
    repeats = args.repeats or (3 if args.quick else 5)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    log(f"device: {name}; torch {torch.__version__}; {'quick' if args.quick else 'full'} sizes")
    peak = peak_matmul_flops(device, repeats)
    log(f"  peak matmul: {peak / 1e12:.2f} TFLOP/s")
    training = []
    for case in CASES:
        training += bench_training(case, device, args.quick, repeats, peak)
    checkpoints = []
    for case in CASES:
        checkpoints += bench_checkpoints(case, 0.125 if args.quick else 1.0)
    result = {
        "device": name,
        "device_type": device.type,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "peak_matmul_flops": peak,
        "training": training,
        "checkpoints": checkpoints,
        "augment": bench_augment(device, repeats, 256),
        "subsample": bench_subsample(device, repeats * 20),
        "packing": bench_packing(device, args.quick),
    }
    result["augment_speedup"] = result["augment"]["speedup"]
    result["subsample_overhead"] = result["subsample"]["overhead"]
    if args.pipeline:
        from study.benchmarks.pipeline_speed import bench_pipeline

        result["pipeline"] = bench_pipeline(device, args.quick, min(repeats, 3))
        for key in ("pipeline_speedup", "pipeline_ideal", "pipeline_bubble"):
            result[key] = result["pipeline"][key]
    if not args.skip_tune:
        result["tune"] = bench_tune(args.quick, min(repeats, 3))
        result["tune_overhead"] = result["tune"]["overhead"]
    else:
        result["tune_overhead"] = None
    for case in CASES:
        rows = {r["K"]: r for r in training if r["case"] == case.name}
        k1, kmax = rows[min(rows)], rows[max(rows)]
        result[f"{case.name}_slowdown_Kmax_over_K1"] = kmax["step_seconds"] / k1["step_seconds"]
        if k1["peak_memory_bytes"]:
            result[f"{case.name}_memory_Kmax_over_K1"] = (
                kmax["peak_memory_bytes"] / k1["peak_memory_bytes"])
            result[f"{case.name}_step_memory_Kmax_over_K1"] = (
                kmax["peak_step_memory_bytes"] / k1["peak_step_memory_bytes"])
    tune_overhead = result["tune_overhead"]
    log(f"augment_speedup {result['augment_speedup']:.2f}  "
        f"subsample_overhead {result['subsample_overhead']:.3f}  tune_overhead "
        + ("not measured" if tune_overhead is None else f"{tune_overhead:.3f}"))
    if args.json:
        print_json(result)
    return 0


if __name__ == "__main__":
    run(main)
