"""One run's configuration as plain, validated data.

Defaults are the paper's protocol (Sec. 4, ``trainables.paper.PROTOCOL``): Adam, lr 1e-3, weight
decay 1e-6, batch 256, tau 0.5. ``arch`` and ``width`` default to the data set's: ResNet-18 for
Fashion-MNIST, ResNet-50 for CIFAR-10 and STL-10, a quarter-width ResNet-18 for the offline digits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from trainables.errors import ConfigError
from trainables.paper import PROTOCOL
from trainables.specs import (
    HEADS,
    PARTITIONS,
    STAGES_RULE,
    SUBSAMPLE_MODES,
    check_K,
    check_stages,
    dataset_spec,
    stages_problem,
)

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    dataset: str = "digits"
    arch: str | None = None
    K: int = 4
    threshold: float | None = None  # T of Eq. (5); None is Eq. (1)
    threshold_slope: float = 0.0  # block k uses T + slope (k - 1) / (K - 1), clipped to [-1, 1]
    subsample: str = PROTOCOL.subsample
    head: str = "paper"  # local projector heads (trainables.models.HEADS)
    tau: float = PROTOCOL.tau
    epochs: int = 10
    batch_size: int = PROTOCOL.batch_size
    lr: float = PROTOCOL.lr
    weight_decay: float = PROTOCOL.weight_decay
    width: float | None = None  # None: the data set's default
    subset: int | None = None  # cap on the labelled train (and unlabeled) images
    data_dir: str = "data"
    download: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16: autocast + channels_last; auto: bf16 on CUDA, else fp32
    knn_k: int = 200
    knn_temperature: float = 0.1
    # The per-epoch kNN monitor (a study's objective and ASHA's signal): every ``monitor_every``
    # epochs and at the last, on the first ``monitor_images`` images of the train part (the
    # bank) and of the validation split (the queries), both shuffled once by the split's seed,
    # with knn_k scaled by the bank's share; None: all of them. Neither changes training: the
    # monitor draws no random numbers.
    monitor_every: int = 1
    monitor_images: int | None = None
    # Blocks trained at once in ``stages`` processes, pipelined (``trainables.pipeline``): the
    # same result as one after another; on CUDA one GPU each. ``partition``: blocks per stage.
    stages: int = 1
    partition: str = "auto"

    def __post_init__(self):
        spec = dataset_spec(self.dataset)
        if self.arch is None:
            self.arch = spec.arch
        if self.width is None:
            self.width = spec.width
        check_K(self.arch, self.K)
        check_stages(self.K, self.stages)
        for name in RANGES:
            if hasattr(self, name):
                problem = range_problem(name, getattr(self, name))
                if problem is not None:
                    raise ConfigError(f"{name}={getattr(self, name)!r} {problem}")
        if self.threshold is None and self.threshold_slope != 0:
            raise ConfigError(f"threshold_slope={self.threshold_slope} needs a threshold; "
                              f"threshold=None is Eq. (1) in every block")
        _positive(self, "epochs", "width", "knn_k", "knn_temperature", "monitor_every")
        if self.monitor_images is not None and self.monitor_images < 2:
            raise ConfigError(f"monitor_images={self.monitor_images} must be at least 2 (or "
                              f"None for all)")
        if self.subset is not None and self.subset < 2:
            raise ConfigError(f"subset={self.subset} must be at least 2 (or None for all)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device={self.device!r} is unknown; allowed: auto, cpu, cuda[:N]")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r} is unknown; allowed: {', '.join(PRECISIONS)}"
            )

    @property
    def thresholds(self) -> list[float | None]:
        """T_k of each block k = 1..K: ``T + slope (k - 1) / (K - 1)`` clipped to [-1, 1]; the
        paper's single T with slope 0, and None (Eq. (1)) everywhere without a threshold."""
        if self.threshold is None:
            return [None] * self.K
        steps = [(k / (self.K - 1)) if self.K > 1 else 0.0 for k in range(self.K)]
        return [min(1.0, max(-1.0, self.threshold + self.threshold_slope * s)) for s in steps]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**d)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The range of each training value a study may search or set, checked once wherever the value
# enters: a run's configuration (here) and a search space's YAML (study.spaces.types).
RANGES = {
    "threshold": (lambda v: v is None or (_is_number(v) and -1 <= v <= 1),
                  "is outside [-1, 1] (or none for Eq. (1))"),
    "threshold_slope": (lambda v: _is_number(v) and -2 <= v <= 2,
                        "must be a number in [-2, 2] (0: one T for every block)"),
    "subsample": (lambda v: v in SUBSAMPLE_MODES,
                  f"is unknown; allowed: {', '.join(SUBSAMPLE_MODES)}"),
    "head": (lambda v: v in HEADS, f"is unknown; allowed: {', '.join(HEADS)}"),
    "stages": (lambda v: stages_problem(v) is None, STAGES_RULE),
    "partition": (lambda v: v in PARTITIONS, f"is unknown; allowed: {', '.join(PARTITIONS)}"),
    "tau": (lambda v: _is_number(v) and v > 0, "must be a positive number"),
    "lr": (lambda v: _is_number(v) and v > 0, "must be a positive number"),
    "batch_size": (lambda v: _is_number(v) and v >= 2, "must be at least 2"),
    "linear_epochs": (lambda v: _is_number(v) and v > 0, "must be a positive number"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "must be a number >= 0"),
}


def range_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for ``name`` (``RANGES``), or None where it is fine."""
    ok, problem = RANGES.get(name, (lambda v: True, ""))
    return None if ok(value) else problem


def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}={value!r} must be a positive number")
