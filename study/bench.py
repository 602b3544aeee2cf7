"""``python -m study.bench``: speed and memory of the training core, measured side by side.

Warm-up first, then the median of several repeats; CUDA timings are device-synchronised. Every
figure is measured on this run's device; what cannot be measured here (peak memory and packing
need CUDA) is reported as null with the reason, never estimated.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from study.benchmarks.training_speed import (
    CASES,
    bench_augment,
    bench_checkpoints,
    bench_subsample,
    bench_training,
    peak_matmul_flops,
    sync,
    synthetic_bundle,
)
from study.engine.console import log, parser, print_json, run
from trainables.config import TrainConfig
from trainables.trainer import Trainer, resolve_device


def bench_tune(quick: bool, repeats: int, epochs: int | None = None) -> dict:
    """One small run called directly against the same run as a Ray Tune trial (its wall time
    inside the trial: per-epoch reports, checkpoints and the final report included).

    The two alternate ``repeats`` times, one direct run then a one-trial study, so that drift in
    a shared machine's load falls on both; the medians are compared. Ray starts once, first."""
    from mlflow.tracking import MlflowClient

    from study.engine.cluster import init_ray
    from study.records.store import Store

    epochs = epochs or (8 if quick else 20)
    linear_epochs = 30
    # Both sides start cold in a fresh process, with the same modules imported and the same
    # threads, and both write the run's report (arrays, plots, metrics.json) as `study.train
    # --out` does: the difference is what the trial adds (Tune's reports and checkpoints).
    code = (
        "import tempfile, time, torch; import trainables.tune_trainable; "
        "from trainables.config import TrainConfig; from trainables.trainer import Trainer; "
        "from trainables.results import final_report; t = time.perf_counter(); "
        f"tr = Trainer(TrainConfig(dataset='digits', K=2, threshold=0.0, epochs={epochs}, "
        "batch_size=128, device='cpu')); tr.fit(); "
        "d = tempfile.TemporaryDirectory(); "
        f"final_report(tr, {linear_epochs}, out_dir=d.name); print(time.perf_counter() - t)"
    )
    start = time.perf_counter()
    started_ray = init_ray(None)
    ray_start_s = time.perf_counter() - start
    direct, trials = [], []
    try:
        with tempfile.TemporaryDirectory() as d:
            store = Store.at(os.path.join(d, "mlruns"))
            space = os.path.join(d, "space.yaml")
            with open(space, "w") as f:
                f.write(_BENCH_SPACE.format(epochs=epochs, linear_epochs=linear_epochs))
            from study.records.trials import is_trial_run, study_filter

            client = MlflowClient(store.tracking_uri)
            for r in range(repeats):
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True)
                direct.append(float(out.stdout.strip().splitlines()[-1]))
                # The study exactly as a user runs it, on the Ray already started here.
                subprocess.run([sys.executable, "-m", "study.tune", "--dataset", "digits",
                                "--space", space, "--budget", "smoke", "--gpus-per-trial", "0",
                                "--cpus-per-trial", str(torch.get_num_threads()),
                                "--store", str(store.root), "--study-name", f"bench{r}",
                                "--address", "auto"], capture_output=True, check=True)
                exp = client.get_experiment_by_name("digits")
                (run,) = [run for run in client.search_runs([exp.experiment_id],
                                                            study_filter(f"bench{r}"))
                          if is_trial_run(run)]
                trials.append(run.data.metrics["wall_time_s"])
            from study.records.footprint import study_footprint

            footprint = study_footprint(store, "bench0", "digits")  # what an ended study holds
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    direct_s, trial_s = statistics.median(direct), statistics.median(trials)
    log(f"  tune: direct {_seconds(direct)}, inside a trial {_seconds(trials)} "
        f"(Ray's start {ray_start_s:.1f} s, once); the ended one-trial study holds "
        f"{footprint['total'] / 1e6:.2f} MB")
    return {"direct_seconds": direct, "trial_seconds": trials, "ray_start_seconds": ray_start_s,
            "overhead": trial_s / direct_s, "study_footprint_bytes": footprint}


def _seconds(values: list[float]) -> str:
    samples = "/".join(f"{v:.1f}" for v in values)
    return f"median {statistics.median(values):.1f} s of {samples}"


_BENCH_SPACE = """
dataset: digits
model: {{arch: resnet18, width: 0.25}}
train: {{batch_size: 128, K: 2, threshold: 0.0, tau: 0.5, linear_epochs: {linear_epochs}}}
search:
  threshold: {{type: categorical, choices: [0.0]}}
  tau: {{type: categorical, choices: [0.5]}}
  K: {{type: categorical, choices: [2]}}
budgets:
  smoke: {{epochs: {epochs}, trials: 1, concurrency: 1, grace_period: {epochs}}}
"""


def bench_packing(device: torch.device, quick: bool) -> dict | None:
    """Aggregate images/s of 4 training processes sharing one GPU over 1 process alone.

    Every worker builds and warms up its trainer, waits at a barrier, then trains for the same
    fixed window; the aggregate is all images over the common wall time (first start to last
    end), so slow start-ups and unequal windows cannot flatter it."""
    if device.type != "cuda":
        return None
    window = 3.0 if quick else 10.0
    alone = packed_images_per_s(1, str(device), window, quick)
    packed = packed_images_per_s(4, str(device), window, quick)
    log(f"  packing: 1 process {alone:.0f} img/s, 4 processes {packed:.0f} img/s together")
    return {"one_images_per_s": alone, "four_images_per_s": packed, "ratio": packed / alone,
            "window_seconds": window}


def packed_images_per_s(n_procs: int, device: str, window: float, quick: bool,
                        stagger: float = 0.0) -> float:
    """``n_procs`` training processes on ``device`` over a common window (``common_rate``).
    ``stagger``: worker i sleeps i * stagger seconds before its set-up (to test the barrier)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_packing_worker,
                         args=(device, window, quick, barrier, results, i * stagger))
             for i in range(n_procs)]
    for p in procs:
        p.start()
    spans = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return common_rate(spans)


def common_rate(spans: list[tuple[int, float, float]]) -> float:
    """Images per second of workers that each report (images, start, end): all the images over
    the wall time from the first start to the last end."""
    images = sum(n for n, _, _ in spans)
    return images / (max(end for _, _, end in spans) - min(start for _, start, _ in spans))


def _packing_worker(device: str, window: float, quick: bool, barrier, results,
                    delay: float) -> None:
    """Train until ``window`` seconds after the barrier; report (images, start, end)."""
    time.sleep(delay)
    dev = torch.device(device)
    batch = 32 if quick and dev.type == "cpu" else 256
    data = synthetic_bundle("fmnist", batch * 4, dev)
    cfg = TrainConfig(dataset="fmnist", arch="resnet18", K=4, threshold=0.0, batch_size=batch,
                      device=device, epochs=1, width=0.25 if quick else 1.0)
    trainer = Trainer(cfg, data)
    batches = [data.pretrain[i * batch:(i + 1) * batch] for i in range(4)]
    for b in batches:  # warm-up
        trainer.train_step(b)
    sync(dev)
    barrier.wait()
    start = time.time()
    steps = 0
    while time.time() - start < window:
        trainer.train_step(batches[steps % len(batches)])
        steps += 1
    sync(dev)
    results.put((2 * batch * steps, start, time.time()))


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
