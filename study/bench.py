"""``python -m study.bench``: speed and memory of the training core, measured side by side.

Warm-up first, then the median of several repeats; CUDA timings are device-synchronised. Every
figure is measured on this run's device; what cannot be measured here (peak memory and packing
need CUDA) is reported as null with the reason, never estimated.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from study._cli import log, parser, print_json, run
from trainables.config import TrainConfig
from trainables.data import SPECS, DataBundle
from trainables.evaluation import LINEAR_EPOCHS, linear_probes
from trainables.features import pooled_features
from trainables.losses import contrastive_loss
from trainables.train import Trainer, resolve_device


@dataclass(frozen=True)
class Case:
    name: str
    dataset: str
    arch: str
    Ks: tuple[int, ...]
    train_images: int  # a real epoch's pre-training images (train split minus validation)
    val_images: int  # the validation split: the kNN monitor's queries
    test_images: int


CASES = (
    Case("cifar10-resnet50", "cifar10", "resnet50", (1, 4, 8, 16), 45_000, 5_000, 10_000),
    Case("fmnist-resnet18", "fmnist", "resnet18", (1, 2, 4, 8), 54_000, 6_000, 10_000),
)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_bundle(dataset: str, n: int, device: torch.device) -> DataBundle:
    """Random uint8 images of the data set's real shape: speed does not depend on content."""
    spec = SPECS[dataset]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, spec.channels, spec.size, spec.size), generator=g,
                      dtype=torch.uint8)
    y = torch.randint(0, spec.num_classes, (n,), generator=g)
    return DataBundle(spec, x, x, y, x[:64], y[:64], x[:64], y[:64]).to(device)


def peak_matmul_flops(device: torch.device, repeats: int) -> float:
    """FLOP/s of a large matrix product: bf16 on CUDA, float32 on a CPU."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats, warmup=2)


def step_flops(trainer: Trainer, batch: torch.Tensor) -> int:
    """FLOPs of one real training step, forward and backward, by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return counter.get_total_flops()


def bench_training(case: Case, device: torch.device, quick: bool, repeats: int,
                   peak: float) -> list[dict]:
    """Per K: training speed, MFU and peak memory, the kNN monitor's and the final evaluation's
    time, each at the real data set's size (measured per image or per epoch, times the count)."""
    batch = 32 if quick else 256
    width = 0.125 if quick else 1.0
    steps = 2 if quick else 10
    data = synthetic_bundle(case.dataset, batch * steps, device)
    rows = []
    for K in case.Ks:
        cfg = TrainConfig(dataset=case.dataset, arch=case.arch, K=K, threshold=0.0,
                          batch_size=batch, width=width, device=str(device), epochs=1)
        trainer = Trainer(cfg, data)
        batches = [data.pretrain[i * batch:(i + 1) * batch] for i in range(steps)]
        run_steps = _steps(trainer, batches)
        run_steps()  # warm-up first, so that cuDNN's autotuning workspaces miss the peak
        _sync(device)
        resident = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        seconds = timed(run_steps, device, repeats, warmup=0) / steps
        memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        flops = step_flops(trainer, batches[0])
        images_per_s = 2 * batch / seconds  # two views count as two
        epoch_seconds = case.train_images / batch * seconds
        # The monitor: one forward pass over the train part and the validation split.
        per_image = timed(_monitor_pass(trainer), device, repeats) / len(data.train_x)
        monitor = per_image * (case.train_images + case.val_images)
        linear = bench_linear_eval(trainer.model.channels, case, device, quick)
        features = per_image * (case.train_images + case.val_images + case.test_images)
        rows.append({
            "case": case.name, "K": K, "batch": batch, "width": width,
            "step_seconds": seconds, "images_per_s": images_per_s,
            "epoch_seconds": epoch_seconds,
            "monitor_seconds": monitor,
            "epoch_with_monitor_seconds": epoch_seconds + monitor,
            "linear_eval_seconds": linear,
            "evaluation_seconds": features + linear,
            "evaluation_over_epoch": (features + linear) / epoch_seconds,
            "step_flops": flops, "mfu": flops / seconds / peak,
            "peak_memory_bytes": memory,
            "peak_step_memory_bytes": None if memory is None else memory - resident,
        })
        log(f"  {case.name} K={K:<2} {images_per_s:9.0f} img/s  {epoch_seconds:8.1f} s/epoch "
            f"(+{monitor:.1f} s monitor)  MFU {rows[-1]['mfu']:.3f}  evaluation "
            f"{features + linear:.1f} s"
            + (f"  peak {memory / 2**30:.2f} GiB (steps {(memory - resident) / 2**30:.2f})"
               if memory else ""))
    return rows


def _monitor_pass(trainer: Trainer) -> Callable[[], object]:
    """The kNN monitor's forward pass over the bundle's train part (pooled final features)."""
    return lambda: pooled_features(trainer.model, trainer.data.train_x, trainer.normalize,
                                   bf16=trainer.bf16)


def bench_linear_eval(channels: list[int], case: Case, device: torch.device,
                      quick: bool) -> float:
    """Seconds of a run's linear evaluation and K probes (``LINEAR_EPOCHS`` epochs) on features
    of the real sizes: the measured time of an epoch times the epochs."""
    g = torch.Generator(device=device).manual_seed(0)
    n, classes = case.train_images, SPECS[case.dataset].num_classes
    train = [torch.randn(n, c, device=device, generator=g) for c in channels]
    y = torch.randint(0, classes, (n,), device=device, generator=g)
    held = [x[:64] for x in train]
    epochs = 1 if quick else 2

    def fit():
        linear_probes(train, y, held, y[:64], held, y[:64], classes, epochs=epochs)

    return timed(fit, device, repeats=1) / epochs * LINEAR_EPOCHS


def _steps(trainer: Trainer, batches: list[torch.Tensor]) -> Callable[[], None]:
    """One timed unit: a training step on each batch."""

    def run_steps():
        for b in batches:
            trainer.train_step(b)

    return run_steps


def bench_checkpoints(case: Case, width: float) -> list[dict]:
    """Bytes on disk per K: a run's checkpoint (model with its heads, Adam's moments, RNG,
    history) and the encoder a finished trial keeps (its blocks). Sizes, not speeds: measured on
    the CPU whatever the device, after one step so that Adam's moments exist."""
    data = synthetic_bundle(case.dataset, 4, torch.device("cpu"))
    rows = []
    for K in case.Ks:
        cfg = TrainConfig(dataset=case.dataset, arch=case.arch, K=K, threshold=0.0,
                          batch_size=4, width=width, device="cpu", precision="fp32", epochs=1)
        trainer = Trainer(cfg, data)
        trainer.train_step(data.pretrain)
        model = trainer.model
        rows.append({
            "case": case.name, "K": K, "width": width,
            "checkpoint_bytes": _saved_bytes(trainer.state_dict()),
            "encoder_bytes": _saved_bytes(model.encoder().state_dict()),
            "encoder_params": sum(p.numel() for p in model.blocks.parameters()),
            "head_params": sum(p.numel() for p in model.heads.parameters()),
        })
        r = rows[-1]
        log(f"  {case.name} K={K:<2} checkpoint {r['checkpoint_bytes'] / 2**20:8.1f} MiB  "
            f"encoder {r['encoder_bytes'] / 2**20:6.1f} MiB  heads {r['head_params'] / 1e6:.1f} M "
            f"parameters")
        del trainer, model
    return rows


def _saved_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def bench_augment(device: torch.device, repeats: int, n: int) -> dict:
    """Batched per-image views on the device against torchvision's per-image PIL."""
    from PIL import Image
    from torchvision.transforms import v2

    from trainables.augment import CROP_SCALE, JITTER, P_FLIP, P_GRAY, P_JITTER, SimCLRAugment

    spec = SPECS["cifar10"]
    x = synthetic_bundle("cifar10", n, device).pretrain
    ours = SimCLRAugment((32, 32), 3, spec.mean, spec.std).to(device)
    pil_images = [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in x]
    per_image = v2.Compose([
        v2.RandomResizedCrop(32, scale=CROP_SCALE),
        v2.RandomHorizontalFlip(P_FLIP),
        v2.RandomApply([v2.ColorJitter(**JITTER)], p=P_JITTER),
        v2.RandomGrayscale(P_GRAY),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(spec.mean, spec.std),
    ])

    def pil_pipeline():
        return torch.stack([per_image(img) for img in pil_images]).to(device)

    batched = n / timed(lambda: ours(x), device, repeats)
    pil = n / timed(pil_pipeline, device, repeats)
    log(f"  augmentation: batched {batched:.0f} img/s, per-image PIL {pil:.0f} img/s")
    return {"batched_images_per_s": batched, "pil_images_per_s": pil, "speedup": batched / pil}


def bench_subsample(device: torch.device, repeats: int, batch: int = 256) -> dict:
    """Eq. (5) against Eq. (1), forward and backward, on projections of a real batch size."""
    z = torch.randn(2 * batch, 128, device=device, requires_grad=True)

    def step(threshold):
        def fn():
            contrastive_loss(z, 0.5, threshold).loss.backward()
        return fn

    plain = timed(step(None), device, repeats, warmup=3)
    masked = timed(step(0.0), device, repeats, warmup=3)
    log(f"  loss fwd+bwd at batch {batch}: Eq. (1) {plain * 1e3:.2f} ms, "
        f"Eq. (5) {masked * 1e3:.2f} ms")
    return {"eq1_seconds": plain, "eq5_seconds": masked, "overhead": masked / plain}


def bench_tune(quick: bool, repeats: int, epochs: int | None = None) -> dict:
    """One small run called directly against the same run as a Ray Tune trial (its wall time
    inside the trial: per-epoch reports, checkpoints and the final report included).

    The two alternate ``repeats`` times, one direct run then a one-trial study, so that drift in
    a shared machine's load falls on both; the medians are compared. Ray starts once, first."""
    from mlflow.tracking import MlflowClient

    from study.cluster import init_ray
    from study.store import Store
    from study.tune import main as tune_main  # the study exactly as a user runs it

    epochs = epochs or (8 if quick else 20)
    linear_epochs = 30
    # Both sides start cold in a fresh process, with the same modules imported and the same
    # threads, and both write the run's report (arrays, plots, metrics.json) as `study.train
    # --out` does: the difference is what the trial adds (Tune's reports and checkpoints).
    code = (
        "import tempfile, time, torch; import trainables.tune_trainable; "
        "from trainables.config import TrainConfig; from trainables.train import Trainer; "
        "from trainables.report import final_report; t = time.perf_counter(); "
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
            from study.records import TRIAL_ID, study_filter

            client = MlflowClient(store.tracking_uri)
            for r in range(repeats):
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True)
                direct.append(float(out.stdout.strip().splitlines()[-1]))
                tune_main(["--dataset", "digits", "--space", space, "--budget", "smoke",
                           "--gpus-per-trial", "0",
                           "--cpus-per-trial", str(torch.get_num_threads()),
                           "--store", str(store.root), "--study-name", f"bench{r}"])
                exp = client.get_experiment_by_name("digits")
                (run,) = [run for run in client.search_runs([exp.experiment_id],
                                                            study_filter(f"bench{r}"))
                          if TRIAL_ID in run.data.tags]
                trials.append(run.data.metrics["wall_time_s"])
            from study.footprint import study_footprint

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
    _sync(dev)
    barrier.wait()
    start = time.time()
    steps = 0
    while time.time() - start < window:
        trainer.train_step(batches[steps % len(batches)])
        steps += 1
    _sync(dev)
    results.put((2 * batch * steps, start, time.time()))


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m study.bench", __doc__)
    p.add_argument("--quick", action="store_true",
                   help="narrow networks and small batches (for a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    p.add_argument("--skip-tune", action="store_true", help="leave out tune_overhead (no Ray)")
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
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
