"""What a study keeps, read back: the store, a trial's record and the answer rule (``trials``),
the saved plan, Ray's saved state, exported files, comparisons, the Pareto front, disk.

Before the layers, ``study.records`` was the module now ``study.records.trials``: its names
still answer here for code written against it."""


def __getattr__(name: str):
    import importlib

    trials = importlib.import_module("study.records.trials")
    if name.startswith("__") or not hasattr(trials, name):
        raise AttributeError(f"module 'study.records' has no attribute {name!r}")
    return getattr(trials, name)
