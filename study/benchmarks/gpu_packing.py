"""Training processes sharing one GPU (``python -m study.bench``'s ``packing`` figures): what
fractional GPUs per trial give together, against one process alone."""

from __future__ import annotations

import time

import torch

from study.benchmarks.training_speed import sync, synthetic_bundle
from study.engine.console import log
from trainables.config import TrainConfig
from trainables.trainer import Trainer


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
