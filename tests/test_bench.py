"""The benchmark runs on a CPU and reports every figure by its documented name."""

import json
import statistics

import pytest

from study.bench import bench_subsample, bench_tune, main


def test_subsample_overhead_is_measured():
    out = bench_subsample(__import__("torch").device("cpu"), repeats=3, batch=64)
    assert out["eq1_seconds"] > 0 and out["eq5_seconds"] > 0
    assert out["overhead"] == pytest.approx(out["eq5_seconds"] / out["eq1_seconds"])


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
    assert all(r["peak_memory_bytes"] is None and 0 < r["mfu"] for r in out["training"])


@pytest.mark.slow
def test_tune_overhead_compares_alternating_runs(ray_session):
    out = bench_tune(quick=True, repeats=2, epochs=1)
    direct, trials = out["direct_seconds"], out["trial_seconds"]
    assert len(direct) == len(trials) == 2 and min(direct + trials) > 0
    assert out["overhead"] == pytest.approx(statistics.median(trials) / statistics.median(direct))
