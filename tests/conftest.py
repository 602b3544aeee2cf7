"""Shared fixtures: one small Ray session for every Tune test of the run."""

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    """Two CPUs and one (logical) GPU, so fractional-GPU packing can be checked on a CPU."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def save_plan(store, study: str = "s", **fields) -> None:
    """A study's saved plan, as ``study.tune`` writes it, with ``fields`` over small defaults."""
    from study.records.plan import Plan

    defaults = {"dataset": "digits", "space_file": "", "budget": "smoke", "trials": 1,
                "epochs": 1, "concurrency": 1, "gpus_per_trial": 0, "cpus_per_trial": 1,
                "data_dir": "", "seed": 0}
    Plan(study=study, **{**defaults, **fields}).save(store)
