"""The Ray cluster a study runs on: a small local Ray, or a head joined by address (with its
token), and the resources each trial gets, checked against the cluster before any trial can
wait forever for what the cluster does not have."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from trainables.errors import ConfigError


def init_ray(address: str | None) -> bool:
    """Join ``address`` or start a small local Ray; reuse a session already started."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        use_token_if_present()
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: {' '.join(str(e).split())}; "
                              f"{CLUSTER_HELP}") from None
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=200 * 1024**2)
    return True


CLUSTER_HELP = (
    "start a head with `ray start --head --port PORT` and join it with --address HOST:PORT "
    "(or auto on the head's machine), with the head's token in ~/.ray/auth_token or "
    "RAY_AUTH_TOKEN"
)


def use_token_if_present() -> None:
    """Ray 2.60 turns token authentication on by default, but a driver given an explicit
    address only sends the token under ``RAY_AUTH_MODE=token``; with ``auto`` it looks for the
    token by itself. Without it every ``HOST:PORT`` join fails with "Failed to connect to Ray
    cluster". Where a token is at hand and the mode is unset, do what ``auto`` does (Ray's own
    function: setting the variable alone is too late once Ray has read its config)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray: it may read the variable itself
        if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds when nothing answers at a Ray address: ``ray.init`` would retry for
    minutes, then raise a traceback. ``auto`` is left to Ray (it finds a local head's files)."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: nothing answers there "
                          f"({e.strerror or type(e).__name__}); {CLUSTER_HELP}") from None


def resources(gpus: float | None, cpus: float | None, concurrency: int, stages: int = 1
              ) -> tuple[float, float]:
    """Per-trial resources (per stage of a pipelined trial: ``stages``, the most any trial of
    the study trains in), checked against the cluster before any trial can wait forever."""
    import ray

    total = ray.cluster_resources()
    n_gpus, n_cpus = total.get("GPU", 0.0), total.get("CPU", 1.0)
    if gpus is None:
        # As many trials on each GPU as concurrency needs: 2 GPUs, 3 at once -> 1/2 each.
        gpus = 1.0 / math.ceil(concurrency * stages / n_gpus) if n_gpus else 0.0
        if stages > 1 and gpus:
            gpus = 1.0  # a whole GPU a stage; Ray queues the trials that do not fit
    if cpus is None:
        cpus = max(0.5, min(4.0, n_cpus / (concurrency * stages)))
    if gpus > 0 and n_gpus < gpus * stages:
        raise ConfigError(
            f"--gpus-per-trial {gpus} asked" + (f" for each of {stages} stages" if stages > 1
                                                 else "")
            + f", but the Ray cluster has {n_gpus:g} GPUs; use --gpus-per-trial 0 or a cluster "
              f"with GPUs"
        )
    if stages > 1 and 0 < gpus < 1:
        raise ConfigError(f"a trial of {stages} pipeline stages needs a whole GPU a stage; "
                          f"--gpus-per-trial {gpus:g} shares one (use 1, or no stages on GPUs)")
    if cpus * stages > n_cpus:
        raise ConfigError(f"--cpus-per-trial {cpus}" + (f" x {stages} stages" if stages > 1
                                                        else "")
                          + f" exceeds the cluster's {n_cpus:g} CPUs")
    return gpus, cpus
