"""What a study is: its plan, saved at its start (``mlruns/studies/<study>.json``) so that
``--resume`` repeats it exactly. The one type a saved study is read as (``Plan.load``,
``Plan.find``, ``Plan.latest``); a new one is made from ``study.tune``'s flags by
``study.engine.planning``."""

from __future__ import annotations

from dataclasses import dataclass, field

from study.records.store import Store
from study.spaces.types import DEFAULT_OBJECTIVES
from trainables.errors import ConfigError


@dataclass
class Plan:
    """A study's settings, saved at its start so that ``--resume`` repeats them exactly."""

    study: str
    dataset: str
    space_file: str
    budget: str
    trials: int
    epochs: int
    concurrency: int
    gpus_per_trial: float
    cpus_per_trial: float
    data_dir: str
    seed: int
    parent_run_id: str = ""
    experiment_id: str = ""
    created: float = 0.0
    config_file: str = ""  # re-run the points of a study.export file over ``seeds`` seeds
    seeds: int = 1
    grid: str = ""  # run the cells of this grid of the space over ``seeds`` seeds
    keep_weights: int | str = 3  # finished trials whose encoder stays in MLflow, or "all"
    objectives: list = field(  # [metric, mode]
        default_factory=lambda: [[o.metric, o.mode] for o in DEFAULT_OBJECTIVES])
    completed: float = 0.0  # when the end-of-study work was done; 0 while it is not
    compare: str = ""  # --compare: the searched study whose best is re-run against the paper's
    points: list = field(default_factory=list)  # --compare: the configurations re-run
    arms: list = field(default_factory=list)  # --compare: per K, its two points (comparison)
    K: list = field(default_factory=list)  # --K: the splits a study is restricted to; [] all
    strata: list = field(default_factory=list)  # a search's strata ({K: 4}, ...); [] none
    shares: list = field(default_factory=list)  # each stratum's trials

    @property
    def kind(self) -> str:
        """search, grid (``--grid``), rerun (``--config``) or compare (``--compare``)."""
        return ("grid" if self.grid else "rerun" if self.config_file
                else "compare" if self.compare else "search")

    def save(self, store: Store) -> None:
        store.save_study(self.study, self.__dict__)

    @classmethod
    def load(cls, store: Store, study: str) -> Plan:
        """The study's plan; one line naming the known studies where ``study`` is not one."""
        return cls(**store.load_study(study))

    @classmethod
    def find(cls, store: Store, study: str) -> Plan | None:
        """The study's plan, None where its record is gone."""
        return cls.load(store, study) if store.study_file(study).is_file() else None

    @classmethod
    def latest(cls, store: Store, dataset: str) -> str:
        """The most recently started study of ``dataset`` (for a bare ``--resume``)."""
        plans = [cls.load(store, p.stem) for p in (store.root / "studies").glob("*.json")]
        mine = sorted((p.created, p.study) for p in plans if p.dataset == dataset)
        if not mine:
            raise ConfigError(f"no study of {dataset} in {store.root}")
        return mine[-1][1]

    def splits(self) -> list[int]:
        """The splits the study covers: its strata, the K its space searches (narrowed by
        --K), or its grid's; [] where its space is gone (then the K its trials ran)."""
        from study.spaces.loading import load_space

        if self.strata:
            return [s["K"] for s in self.strata if "K" in s]
        try:
            space = load_space(self.space_file)
        except ConfigError:
            return []
        if self.grid:
            return list(space.grids.get(self.grid, {}).get("K", []))
        if self.kind != "search" or "K" not in space.search:
            return []
        return [K for K in space.search["K"].choices if not self.K or K in self.K]


def study_splits(store: Store, study: str) -> list[int]:
    """``Plan.splits`` of a study by name; [] where its record is gone."""
    plan = Plan.find(store, study)
    return plan.splits() if plan is not None else []


