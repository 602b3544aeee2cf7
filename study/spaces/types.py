"""Search spaces as typed dataclasses: what ``search_spaces/<dataset>.yaml`` holds once
``study.spaces.loading`` has read and validated it.

A file holds the data set, the model, the paper's training protocol (``train``), what Optuna
searches (``search``: parameter -> distribution), the points evaluated first, the budgets, and
the paper's experiments as grids (``grids``: name -> parameter -> values, run by ``--grid``) and
how many finished trials keep their encoder's weights (``keep_weights``: N best, or ``all``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from trainables.errors import ConfigError
from trainables.paper import PROTOCOL

SEARCHABLE = ("threshold", "threshold_slope", "tau", "K", "subsample", "head", "stages",
              "lr", "weight_decay")
CATEGORICAL = ("K", "subsample", "head", "stages")
# What a trial reports in every result (costs) or its last (linear_val_acc): what a study may
# optimise. Accuracies are maximised, costs minimised, in a sensible study.
OBJECTIVE_METRICS = ("knn_val_acc", "linear_val_acc", "max_block_head_macs", "max_block_macs",
                     "head_params", "step_seconds")
ACCURACIES = ("knn_val_acc", "linear_val_acc")
MODES = ("max", "min")
DISTRIBUTIONS = ("float", "int", "categorical")
BUDGETS = ("smoke", "laptop", "short", "paper")
NONE_WORDS = ("none", "null")  # a grid's threshold ``none``: Eq. (1), as YAML's null


@dataclass
class Model:
    arch: str
    width: float = 1.0


@dataclass
class Train:
    """The values used for whatever is not searched: by default the paper's protocol (Sec. 4,
    ``trainables.paper.PROTOCOL``)."""

    lr: float = PROTOCOL.lr
    weight_decay: float = PROTOCOL.weight_decay
    batch_size: int = PROTOCOL.batch_size
    tau: float = PROTOCOL.tau
    K: int = 1
    threshold: float | None = None
    subsample: str = PROTOCOL.subsample
    linear_epochs: int = PROTOCOL.linear_epochs
    stages: int = 1  # pipeline stages a trial trains its blocks in (trainables.pipeline)
    partition: str = "auto"


@dataclass
class Distribution:
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None


@dataclass
class Budget:
    epochs: int
    trials: int
    concurrency: int = 1
    grace_period: int = 1
    subset: int | None = None
    width: float | None = None  # overrides model.width (narrow nets for CPU budgets)
    linear_epochs: int | None = None  # overrides train.linear_epochs
    checkpoint_every: int = 1
    seeds: int = 3  # seeds per cell of a grid (--grid), and per point of a re-run (--config)
    monitor_every: int = 1  # the kNN monitor (ASHA's signal) every N epochs and at the last
    monitor_images: int | None = None  # its bank and queries: the first N of each (None: all)


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # max or min


DEFAULT_OBJECTIVES = (Objective("knn_val_acc", "max"),)


@dataclass
class SearchSpace:
    dataset: str
    model: Model
    train: Train
    search: dict[str, Distribution]
    budgets: dict[str, Budget]
    points_to_evaluate: list[dict] = field(default_factory=list)
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    keep_weights: int | str = 3  # finished trials whose encoder stays in MLflow, best first
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES  # two or more: a Pareto front
    source: str = ""

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ConfigError(
                f"{self.source}: budget {name!r} is not defined; allowed: {', '.join(self.budgets)}"
            )
        return self.budgets[name]

    @property
    def max_stages(self) -> int:
        """The most pipeline stages any trial of this space trains in."""
        values = [self.train.stages, *(self.search["stages"].choices if "stages" in self.search
                                        else []),
                  *(v for g in self.grids.values() for v in g.get("stages", []))]
        return max(values)

    def grid(self, name: str) -> list[dict]:
        """The cells of grid ``name``: every combination of its values, in the file's order."""
        if name not in self.grids:
            raise ConfigError(f"{self.source}: grid {name!r} is not defined; allowed: "
                              f"{', '.join(self.grids) or 'none (add a grids: section)'}")
        names, values = zip(*self.grids[name].items())
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
