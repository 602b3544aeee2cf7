"""A search space's YAML file: where the shipped ones are, and reading one into
``study.spaces.types.SearchSpace``, checked once, as the values enter. Every error names the file,
the key and what is allowed."""

from __future__ import annotations

from dataclasses import MISSING, fields
from importlib import resources
from pathlib import Path

import yaml

from study.spaces.types import (
    ACCURACIES,
    BUDGETS,
    CATEGORICAL,
    DEFAULT_OBJECTIVES,
    DISTRIBUTIONS,
    MODES,
    NONE_WORDS,
    OBJECTIVE_METRICS,
    SEARCHABLE,
    Budget,
    Distribution,
    Model,
    Objective,
    SearchSpace,
    Train,
)
from trainables.config import range_problem
from trainables.errors import ConfigError
from trainables.specs import ARCH_LAYERS, SPECS, K_problem, stages_problem

# One line: why a search of one objective may not search ``stages``, and what to do instead.
NO_ACCURACY_IN_STAGES = (
    "cannot change accuracy (a trial pipelined over S stages trains the same parameters as one "
    "stage, bit for bit), so a search of one objective would spend trials on it and split each "
    "K's search in parts; set train.stages, or trade it off against its cost with a second "
    "objective such as {metric: step_seconds, mode: min} (digits-stages.yaml)")


def space_path(dataset: str) -> Path:
    """The shipped YAML of ``dataset``, wherever the package is installed."""
    if dataset not in SPECS:
        raise ConfigError(f"dataset={dataset!r} is unknown; allowed: {', '.join(SPECS)}")
    return Path(str(resources.files("search_spaces").joinpath(f"{dataset}.yaml")))


def shipped_spaces() -> list[str]:
    """The names of the shipped search spaces (``fmnist``, ``fmnist-pareto``, ...)."""
    folder = resources.files("search_spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_space(text: str) -> Path:
    """``--space``: a YAML file, or the name of a shipped space such as ``digits-pareto``."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    if text in shipped_spaces():
        return Path(str(resources.files("search_spaces").joinpath(f"{text}.yaml")))
    raise ConfigError(f"--space {text!r} is neither a file nor a shipped space; shipped: "
                      f"{', '.join(shipped_spaces())}")


def load_space(path: str | Path) -> SearchSpace:
    return parse_space(read_yaml(path, "search space file"), str(path))


def read_yaml(path: str | Path, what: str) -> object:
    """A YAML file's content, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def parse_space(raw: object, source: str) -> SearchSpace:
    where = _Where(source)
    if not isinstance(raw, dict):
        raise where.error("", "the file must be a mapping with keys dataset, model, train, ...")
    _keys(where, "", raw, {f.name for f in fields(SearchSpace)} - {"source"},
          required=("dataset", "model", "search", "budgets"))
    dataset = raw["dataset"]
    if dataset not in SPECS:
        raise where.error("dataset", f"{dataset!r} is unknown; allowed: {', '.join(SPECS)}")
    model = _dataclass(where, "model", raw["model"], Model)
    if model.arch not in ARCH_LAYERS:
        raise where.error("model.arch",
                          f"{model.arch!r} is unknown; allowed: {', '.join(ARCH_LAYERS)}")
    if not _number(model.width) or model.width <= 0:
        raise where.error("model.width", f"{model.width!r} must be a positive number")
    train = _dataclass(where, "train", raw.get("train") or {}, Train)
    _check_value(where, "train", train.__dict__, model.arch)
    search = {}
    if not isinstance(raw["search"], dict) or not raw["search"]:
        raise where.error("search", f"must map parameters to distributions; allowed: "
                          f"{', '.join(SEARCHABLE)}")
    for name, spec in raw["search"].items():
        key = f"search.{name}"
        if name not in SEARCHABLE:
            raise where.error(key, f"is not searchable; allowed: {', '.join(SEARCHABLE)}")
        search[name] = _distribution(where, key, spec, name, model.arch)
    budgets = {}
    if not isinstance(raw["budgets"], dict) or not raw["budgets"]:
        raise where.error("budgets", f"must define budgets; allowed: {', '.join(BUDGETS)}")
    for name, spec in raw["budgets"].items():
        if name not in BUDGETS:
            raise where.error(f"budgets.{name}", f"is unknown; allowed: {', '.join(BUDGETS)}")
        budgets[name] = _budget(where, f"budgets.{name}", spec)
    points = raw.get("points_to_evaluate") or []
    for i, point in enumerate(points):
        key = f"points_to_evaluate[{i}]"
        if not isinstance(point, dict) or set(point) != set(search):
            raise where.error(key, f"must set exactly the searched parameters "
                              f"{', '.join(search)}, got {point!r}")
        _check_value(where, key, point, model.arch)
    grids = raw.get("grids") or {}
    if not isinstance(grids, dict):
        raise where.error("grids", f"must map grid names to {{parameter: [values]}}, got {grids!r}")
    grids = {name: _grid(where, f"grids.{name}", spec, model.arch)
             for name, spec in grids.items()}
    keep = raw.get("keep_weights", 3)
    if keep != "all" and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise where.error("keep_weights", f"{keep!r} must be an integer >= 1 or all")
    objectives = _objectives(where, raw.get("objectives"))
    _check_stages(where, train, search, grids)
    if "stages" in search and len(objectives) == 1:
        raise where.error("search.stages", NO_ACCURACY_IN_STAGES)
    return SearchSpace(dataset, model, train, search, budgets, list(points), grids, keep,
                       objectives, source)


def _check_stages(where: _Where, train: Train, search: dict, grids: dict) -> None:
    """Every stage count fits every split it can meet: a stage holds at least one block. The
    search's trials take their values from ``search`` else ``train``; a grid's trials from the
    grid else ``train`` (a grid cell overrides the space's train:, never the search)."""
    def values(name: str, grid_name: str | None, default) -> tuple[str, list]:
        if grid_name is not None:
            if name in grids[grid_name]:
                return f"grids.{grid_name}.{name}", list(grids[grid_name][name])
        elif name in search:
            return f"search.{name}", list(search[name].choices or [])
        return f"train.{name}", [default]

    for grid_name in [None, *grids]:
        key, stages = values("stages", grid_name, train.stages)
        K_key, Ks = values("K", grid_name, train.K)
        problem = stages_problem(max(stages), min(Ks), f"the smallest K of {K_key}")
        if problem is not None:
            raise where.error(key, f"{max(stages)} {problem}")


class _Where:
    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key + ' ' if key else ''}{message}")


def _keys(where: _Where, prefix: str, raw: dict, allowed: set[str], required=()) -> None:
    for key in raw:
        if key not in allowed:
            name = f"{prefix}.{key}" if prefix else key
            raise where.error(name, f"is not a known key; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in raw:
            name = f"{prefix}.{key}" if prefix else key
            raise where.error(name, "is missing")


def _dataclass(where: _Where, prefix: str, raw: object, cls):
    if not isinstance(raw, dict):
        raise where.error(prefix, f"must be a mapping, got {raw!r}")
    names = {f.name for f in fields(cls)}
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    _keys(where, prefix, raw, names, required)
    return cls(**raw)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(where: _Where, prefix: str, values: dict, arch: str, nest: bool = True) -> None:
    """Check the values of searchable parameters wherever they appear (train, points, ranges);
    the error names ``prefix.name``, or ``prefix`` alone without ``nest``."""
    for name, v in values.items():
        key = f"{prefix}.{name}" if nest else prefix
        # The one rule of each range (trainables.config) and of the splits (trainables.specs).
        problem = K_problem(arch, v) if name == "K" else range_problem(name, v)
        if problem is not None:
            raise where.error(key, f"{v!r} {problem}")


def _distribution(where: _Where, key: str, raw: object, name: str, arch: str) -> Distribution:
    d = _dataclass(where, key, raw, Distribution)
    if d.type not in DISTRIBUTIONS:
        raise where.error(f"{key}.type", f"{d.type!r} is unknown; allowed: "
                          f"{', '.join(DISTRIBUTIONS)}")
    if d.type == "categorical":
        if not isinstance(d.choices, list) or not d.choices:
            raise where.error(f"{key}.choices", "must be a non-empty list")
        for c in d.choices:
            _check_value(where, key, {name: c}, arch, nest=False)
        return d
    if not (_number(d.low) and _number(d.high) and d.low < d.high):
        raise where.error(key, f"needs numbers low < high, got low={d.low!r} high={d.high!r}")
    if name in CATEGORICAL:
        raise where.error(f"{key}.type", "must be categorical for this parameter")
    for bound in ("low", "high"):
        _check_value(where, f"{key}.{bound}", {name: getattr(d, bound)}, arch, nest=False)
    if d.log and d.low <= 0:
        raise where.error(f"{key}.low", f"{d.low!r} must be > 0 with log: true")
    return d


def _objectives(where: _Where, raw: object) -> tuple[Objective, ...]:
    """``objectives: [{metric: knn_val_acc, mode: max}, {metric: max_block_head_macs, ...}]``."""
    if raw is None:
        return DEFAULT_OBJECTIVES
    if not isinstance(raw, list) or not raw:
        raise where.error("objectives", f"must be a list of {{metric, mode}}, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        key = f"objectives[{i}]"
        if not isinstance(item, dict) or set(item) != {"metric", "mode"}:
            raise where.error(key, f"must be {{metric: NAME, mode: max|min}}, got {item!r}")
        if item["metric"] not in OBJECTIVE_METRICS:
            raise where.error(f"{key}.metric", f"{item['metric']!r} is not a metric the trials "
                              f"report; allowed: {', '.join(OBJECTIVE_METRICS)}")
        if item["mode"] not in MODES:
            raise where.error(f"{key}.mode", f"{item['mode']!r} is unknown; allowed: max, min")
        out.append(Objective(item["metric"], item["mode"]))
    metrics = [o.metric for o in out]
    if len(set(metrics)) < len(metrics):
        raise where.error("objectives", f"names a metric twice: {', '.join(metrics)}")
    if not set(metrics) & set(ACCURACIES):
        raise where.error("objectives", f"needs an accuracy ({' or '.join(ACCURACIES)}): "
                          f"early stopping acts on it, and a front of costs alone is the "
                          f"smallest network")
    return tuple(out)


def _grid(where: _Where, key: str, raw: object, arch: str) -> dict[str, list]:
    """A grid: searchable parameter -> the list of its values (``none`` for no threshold)."""
    if not isinstance(raw, dict) or not raw:
        raise where.error(key, f"must map parameters to lists of values; allowed parameters: "
                          f"{', '.join(SEARCHABLE)}")
    grid = {}
    for name, values in raw.items():
        if name not in SEARCHABLE:
            raise where.error(f"{key}.{name}", f"is not a grid parameter; allowed: "
                              f"{', '.join(SEARCHABLE)}")
        if not isinstance(values, list) or not values:
            values = [values]  # a single value fixes the parameter for every cell
        if name == "threshold":
            values = [None if isinstance(v, str) and v.lower() in NONE_WORDS else v
                      for v in values]
        for v in values:
            _check_value(where, f"{key}.{name}", {name: v}, arch, nest=False)
        if len(set(map(repr, values))) < len(values):
            raise where.error(f"{key}.{name}", f"repeats a value in {values!r}")
        grid[name] = values
    return grid


def _budget(where: _Where, key: str, raw: object) -> Budget:
    b = _dataclass(where, key, raw, Budget)
    for name in ("epochs", "trials", "concurrency", "grace_period", "checkpoint_every", "seeds",
                 "monitor_every"):
        v = getattr(b, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise where.error(f"{key}.{name}", f"{v!r} must be an integer >= 1")
    if b.grace_period > b.epochs:
        raise where.error(f"{key}.grace_period", f"{b.grace_period} exceeds epochs={b.epochs}")
    if b.grace_period < b.checkpoint_every:
        # A trial ASHA stops before its first checkpoint leaves nothing that says it ended
        # (study.engine.checkpoints.retire_checkpoint writes its end into its checkpoint): a driver
        # killed before Ray saved the stop starts it again on --resume, into its KILLED run.
        raise where.error(f"{key}.grace_period", f"{b.grace_period} is below checkpoint_every="
                          f"{b.checkpoint_every}; allowed: grace_period >= checkpoint_every (a "
                          f"trial stopped early must have a checkpoint to end in)")
    if b.grace_period % b.monitor_every:
        raise where.error(f"{key}.grace_period", f"{b.grace_period} is not a multiple of "
                          f"monitor_every={b.monitor_every}: ASHA decides on the epochs the "
                          f"monitor reports")
    mi = b.monitor_images
    if mi is not None and (not isinstance(mi, int) or isinstance(mi, bool) or mi < 2):
        raise where.error(f"{key}.monitor_images", f"{mi!r} must be an integer >= 2 or null")
    if b.subset is not None and (not isinstance(b.subset, int) or b.subset < 2):
        raise where.error(f"{key}.subset", f"{b.subset!r} must be an integer >= 2 or null")
    if b.width is not None and (not _number(b.width) or b.width <= 0):
        raise where.error(f"{key}.width", f"{b.width!r} must be a positive number or null")
    le = b.linear_epochs
    if le is not None and (not isinstance(le, int) or le < 1):
        raise where.error(f"{key}.linear_epochs", f"{b.linear_epochs!r} must be an integer >= 1")
    return b
