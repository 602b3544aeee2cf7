"""The benchmark runs on a CPU and reports every figure by its documented name."""

import json
import time

import pytest
import torch

from study.bench import main
from study.benchmarks.gpu_packing import common_rate
from study.benchmarks.study_speed import bench_tune
from study.benchmarks.training_speed import bench_subsample


def test_subsample_overhead_sees_a_slowdown_injected_into_eq5(monkeypatch):
    import study.benchmarks.training_speed as measure

    real = measure.contrastive_loss

    def eq5_slower_by_20_ms(z, tau, threshold=None, *args, **kwargs):
        if threshold is not None:
            time.sleep(0.02)
        return real(z, tau, threshold, *args, **kwargs)

    monkeypatch.setattr(measure, "contrastive_loss", eq5_slower_by_20_ms)
    out = bench_subsample(torch.device("cpu"), repeats=5, batch=64)
    # The sleep puts at least 20 ms on Eq. (5); a busy machine can only add to either side, so
    # only a floor is safe (a band failed once when other work shared the 2 cores).
    assert 0.01 < out["eq5_seconds"] - out["eq1_seconds"] < 0.5
    assert out["overhead"] > 2  # Eq. (1) at batch 64 takes a millisecond or so here


@pytest.mark.slow
def test_quick_bench_json(capsys):
    assert main(["--quick", "--skip-tune", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("augment_speedup", "subsample_overhead", "tune_overhead", "training",
                "peak_matmul_flops"):
        assert key in out
    assert out["tune_overhead"] is None  # skipped, not invented
    assert out["packing"] is None  # CUDA only
    Ks = {(r["case"], r["K"]) for r in out["training"]}
    assert ("cifar10-resnet50", 16) in Ks and ("fmnist-resnet18", 8) in Ks
    sizes = {r["K"]: r for r in out["checkpoints"] if r["case"] == "cifar10-resnet50"}
    # Deeper splits add heads: the checkpoint grows with K while the encoder stays the same.
    assert sizes[16]["checkpoint_bytes"] > sizes[4]["checkpoint_bytes"] > sizes[1][
        "checkpoint_bytes"]
    assert len({r["encoder_params"] for r in sizes.values()}) == 1
    assert all(r["encoder_bytes"] < r["checkpoint_bytes"] / 3 for r in sizes.values())
    cuda = out["device_type"] == "cuda"
    for r in out["training"]:
        assert 0 < r["mfu"] and r["monitor_seconds"] > 0 and r["linear_eval_seconds"] > 0
        assert r["evaluation_over_epoch"] == pytest.approx(
            r["evaluation_seconds"] / r["epoch_seconds"])
        # Memory is measured on CUDA only, never estimated; the steps' part is below the total.
        assert (r["peak_memory_bytes"] is None) == (not cuda)
        if cuda:
            assert 0 < r["peak_step_memory_bytes"] < r["peak_memory_bytes"]


def test_packing_counts_the_common_wall_time():
    """Two workers of 100 images each, one second apiece but five seconds apart: together they
    made 200 images in six seconds, not 200 in one."""
    assert common_rate([(100, 0.0, 1.0), (100, 5.0, 6.0)]) == pytest.approx(200 / 6)
    assert common_rate([(100, 0.0, 1.0), (100, 0.0, 1.0)]) == pytest.approx(200)


@pytest.mark.slow
def test_packed_workers_start_together_after_the_barrier(monkeypatch):
    import study.benchmarks.gpu_packing as packing

    spans = []
    monkeypatch.setattr(packing, "common_rate", lambda s: spans.extend(s) or 0.0)
    packing.packed_images_per_s(2, "cpu", window=0.5, quick=True, stagger=1.5)
    starts = [start for _, start, _ in spans]
    assert len(spans) == 2 and all(n > 0 for n, _, _ in spans)
    assert max(starts) - min(starts) < 0.5  # one barrier, though one set-up took 1.5 s longer
    assert all(end - start >= 0.5 for _, start, end in spans)


@pytest.mark.slow
def test_tune_overhead_compares_alternating_runs(ray_session):
    """One pair (the figure itself uses three): both sides measure the same run, so the ratio
    stays near 1 even on one noisy pair; Ray's start is measured apart, once."""
    out = bench_tune(quick=True, repeats=1, epochs=1)
    direct, trials = out["direct_seconds"], out["trial_seconds"]
    assert len(direct) == len(trials) == 1 and out["ray_start_seconds"] > 0
    assert 0.4 < out["overhead"] < 2.5
    # The ended study holds its report and its one kept encoder, no checkpoint.
    disk = out["study_footprint_bytes"]
    assert disk["kept_encoders"] == 1 and 0 < disk["encoders"] < disk["artifacts"]
    assert disk["total"] == disk["artifacts"] + disk["ray"]


@pytest.mark.slow  # two stage processes start and train ResNet-18 steps: ~45 s on 2 cores
def test_the_pipeline_bench_reports_its_figures_consistently():
    from study.benchmarks.pipeline_speed import bench_pipeline

    out = bench_pipeline(torch.device("cpu"), True, repeats=1, stages=2, K=4, steps=4)
    assert out["pipeline_speedup"] == pytest.approx(
        out["sequential_step_s"] / out["pipeline_step_s"])
    assert out["pipeline_efficiency"] == pytest.approx(
        out["pipeline_speedup"] / out["pipeline_ideal"])
    assert 1 <= out["pipeline_ideal"] <= 2 and 0 <= out["pipeline_bubble"] < 1
    assert len(out["stage_compute_s"]) == 2 and out["stage_wait_s"][0] == 0  # stage 1 never waits
    assert out["partition"].startswith("blocks 1")


def test_asha_replay_follows_rays_rule_and_compares_the_monitors():
    """Ray's ASHA on recorded monitor values: a trial below the 75th percentile of those that
    reached the rung before it stops; the same curves decide alike in every order."""
    from study.benchmarks.asha_monitor import replay, stopped

    curves = [[0.1], [0.2], [0.3], [0.4]]
    assert stopped(curves, [3, 2, 1, 0], grace_period=1, max_t=2) == {0, 1, 2}
    assert stopped(curves, [0, 1, 2, 3], grace_period=1, max_t=2) == set()
    assert stopped(curves, [3, 2, 1, 0], grace_period=1, max_t=1) == set()  # the trial's end
    alike = replay(curves, curves, grace_period=1, max_t=2, orders=50)
    assert alike["asha_same_decision"] == alike["asha_same_stopped_set"] == 1.0
    reversed_ = replay(curves, curves[::-1], grace_period=1, max_t=2, orders=50)
    assert reversed_["asha_same_decision"] < 1 and reversed_["asha_best_kept_full"] == 1.0
    assert reversed_["asha_best_kept_cheap"] < 1
