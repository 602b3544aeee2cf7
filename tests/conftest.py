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
