"""The pipelined trainer measured (``python -m study.bench --pipeline``): ResNet-18 at K = 8 over
S stage processes against the sequential step.

On a CPU a device is a core: the stages run one thread each, and the speed-up is against the
sequential step on one thread (FDG's comparison, one device against S), with the sequential step
on all threads beside it (the whole machine). On one GPU the stages share it, their activations
going through the host (gloo): what that shows is the overlap of small kernels, not S devices.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from study.benchmarks.training_speed import sync, synthetic_bundle
from study.engine.console import log
from trainables.config import TrainConfig
from trainables.pipeline import PipelinedTrainer
from trainables.trainer import Trainer


def bench_pipeline(device: torch.device, quick: bool, repeats: int, stages: int = 2,
                   K: int = 8, steps: int = 16) -> dict:
    batch = 128 if quick or device.type == "cpu" else 256
    width = 0.25 if quick or device.type == "cpu" else 1.0
    data = synthetic_bundle("fmnist", batch * steps, device)
    cfg = TrainConfig(dataset="fmnist", arch="resnet18", K=K, threshold=0.3, batch_size=batch,
                      width=width, epochs=repeats + 1, device=str(device), monitor_every=10**6)
    threads_before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        torch.set_num_threads(1)
        one = _sequential_step(cfg, data, device, repeats)
        torch.set_num_threads(cores)
        whole = _sequential_step(cfg, data, device, repeats) if device.type == "cpu" else one
        torch.set_num_threads(1)
        trainer = Trainer(cfg, data)
        devices = [str(device)] * stages if device.type == "cuda" else None
        with PipelinedTrainer(trainer, stages, "auto", threads=1, devices=devices) as pipeline:
            for _ in range(repeats + 1):  # the first epoch warms up
                pipeline.train_epoch()
            stats = pipeline.stats[1:]
            partition = pipeline.describe()
    finally:
        torch.set_num_threads(threads_before)
    step = statistics.median(s.seconds / s.steps for s in stats)
    ideal = statistics.median(s.ideal for s in stats)
    senders = [statistics.median(s.stages[i].send / s.steps for s in stats)
               for i in range(stages - 1)]
    out = {
        "arch": "resnet18", "K": K, "stages": stages, "width": width, "batch": batch,
        "steps_per_epoch": steps, "device": device.type, "partition": partition,
        "threads_per_stage": 1, "sequential_threads_all": cores,
        "sequential_step_s": one,
        "sequential_step_all_threads_s": whole,
        "pipeline_step_s": step,
        "pipeline_speedup": one / step,
        "pipeline_speedup_vs_all_threads": whole / step,
        "pipeline_ideal": ideal,
        "pipeline_efficiency": one / step / ideal,
        "pipeline_bubble": statistics.median(s.bubble for s in stats),
        # fill and drain alone: (S - 1) ticks of an epoch's steps + S - 1
        "pipeline_fill_drain": (stages - 1) / (steps + stages - 1),
        "stage_compute_s": [statistics.median(s.stages[i].compute / s.steps for s in stats)
                            for i in range(stages)],
        "stage_wait_s": [statistics.median(s.stages[i].recv / s.steps for s in stats)
                         for i in range(stages)],
        "transfer_s": max(senders) if senders else 0.0,
    }
    log(f"  pipeline K={K} S={stages} ({partition}, {device.type}): "
        f"{1e3 * step:.0f} ms a step against {1e3 * one:.0f} ms sequential on one thread "
        f"({out['pipeline_speedup']:.2f}x, ideal {ideal:.2f}x, bubble "
        f"{100 * out['pipeline_bubble']:.0f}%) and {1e3 * whole:.0f} ms on {cores} threads")
    return out


def _sequential_step(cfg: TrainConfig, data, device: torch.device, repeats: int) -> float:
    """The median of ``repeats`` epochs' seconds a step (after one warm-up epoch)."""
    trainer = Trainer(cfg, data)
    times = []
    for rep in range(repeats + 1):
        batches, steps, _ = trainer.epoch_batches()
        sync(device)
        start = time.perf_counter()
        for images in batches:
            trainer.train_step(images)
        sync(device)
        if rep:
            times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)
