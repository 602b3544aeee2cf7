"""The training core's speed and memory, measured: a training step per K (time, FLOP/s against
the device's matmul peak, peak memory), the kNN monitor and linear evaluation, checkpoint sizes,
the batched augmentation against per-image PIL, and Eq. (5) against Eq. (1).

Warm-up first, then the median of several repeats; CUDA timings are device-synchronised.
``python -m study.bench`` runs these and the study-level ones (a trial's overhead, packing).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from study.engine.console import log
from trainables.config import TrainConfig
from trainables.data import SPECS, DataBundle
from trainables.evaluation import linear_probes
from trainables.features import pooled_features
from trainables.losses import contrastive_loss
from trainables.paper import PROTOCOL
from trainables.trainer import Trainer


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
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sync(device: torch.device) -> None:
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
        sync(device)
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
    """Seconds of a run's linear evaluation and K probes (``PROTOCOL.linear_epochs`` epochs) on
    features of the real sizes: the measured time of an epoch times the epochs."""
    g = torch.Generator(device=device).manual_seed(0)
    n, classes = case.train_images, SPECS[case.dataset].num_classes
    train = [torch.randn(n, c, device=device, generator=g) for c in channels]
    y = torch.randint(0, classes, (n,), device=device, generator=g)
    held = [x[:64] for x in train]
    epochs = 1 if quick else 2

    def fit():
        linear_probes(train, y, held, y[:64], held, y[:64], classes, epochs=epochs)

    return timed(fit, device, repeats=1) / epochs * PROTOCOL.linear_epochs


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


def bench_monitor(dataset: str, data_dir: str, configs: int, epochs: int, images: int,
                  subset: int | None, width: float, device: torch.device,
                  seed: int = 0) -> dict:
    """The cheap kNN monitor (the first ``images`` of the train part and of the validation
    split) against the full one, on the real data set, over ``configs`` trials drawn as a
    search draws them (T uniform in [-1, 0.9], tau log-uniform in [0.1, 1], K cycling through
    1, 2, 4, 8): each epoch, both monitors' values and seconds beside the training's seconds,
    and the Spearman correlation across trials of the cheap monitor's values with the full
    one's (what ASHA ranks trials by)."""
    import math
    import random

    from scipy.stats import spearmanr

    from study.benchmarks.asha_monitor import replay
    from trainables.data import load_data

    data = load_data(dataset, data_dir, subset, download=False).to(device)
    rng = random.Random(seed)
    full, cheap = [], []  # per trial, per epoch
    seconds = {"epoch": [], "full": [], "cheap": []}
    for i in range(configs):
        cfg = TrainConfig(
            dataset=dataset, K=(1, 2, 4, 8)[i % 4], threshold=round(rng.uniform(-1, 0.9), 3),
            tau=round(math.exp(rng.uniform(math.log(0.1), 0.0)), 3), epochs=epochs, width=width,
            subset=subset, data_dir=data_dir, download=False, device=str(device), seed=seed,
            monitor_every=epochs + 1)  # the trainer's own monitor: at the last epoch only
        trainer = Trainer(cfg, data)
        full.append([]), cheap.append([])
        for _ in range(epochs):
            record = trainer.train_epoch()
            seconds["epoch"].append(record["epoch_seconds"])
            for name, n, out in (("full", None, full), ("cheap", images, cheap)):
                trainer.cfg.monitor_images = n
                sync(device)
                t = time.perf_counter()
                out[-1].append(trainer.knn_val_accuracy())
                sync(device)
                seconds[name].append(time.perf_counter() - t)
        log(f"  monitor: trial {i + 1}/{configs} K={cfg.K} T={cfg.threshold} tau={cfg.tau}: "
            f"full {full[-1][-1]:.4f}, cheap {cheap[-1][-1]:.4f}")
    per_epoch = [float(spearmanr([f[e] for f in full], [c[e] for c in cheap]).statistic)
                 for e in range(epochs)]
    epoch_s = statistics.median(seconds["epoch"])
    return {
        "dataset": dataset, "configs": configs, "epochs": epochs, "subset": subset,
        "width": width, "monitor_images": images,
        "train_images": len(data.train_x), "val_images": len(data.val_x),
        "epoch_seconds": epoch_s,
        "monitor_full_seconds": statistics.median(seconds["full"]),
        "monitor_cheap_seconds": statistics.median(seconds["cheap"]),
        "monitor_full_over_epoch": statistics.median(seconds["full"]) / epoch_s,
        "monitor_cheap_over_epoch": statistics.median(seconds["cheap"]) / epoch_s,
        "spearman_per_epoch": per_epoch,
        "spearman_last": per_epoch[-1],
        # ASHA's first rung at the last measured epoch (the laptop budget's grace period 3)
        **replay(full, cheap, grace_period=epochs, max_t=epochs + 1),
        "full": full, "cheap": cheap,
    }
