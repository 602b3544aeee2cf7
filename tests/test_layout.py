"""The layout the README describes, checked on the source: the layers (commands at the top of
``study/``, then ``benchmarks``, the report's making, ``engine``, ``records``, ``spaces``, then
``trainables``),
no import up the layers, no module imports a command, no two modules import each other (imports
inside functions count: they only defer the circle), no module of either package grows far past
300 lines, and the top of ``study/`` holds its commands and little else."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "trainables")
MAX_LINES = 320  # "about 300"
MAX_TOP = 10  # modules at the top of study/: the commands (and the package's __init__)

# Lowest first: a module may import its own layer and those below it, never one above.
LAYERS = ("trainables", "study.spaces", "study.records", "study.engine", "study.report",
          "study.benchmarks", "commands")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _is_command(path: Path) -> bool:
    return path.name == "__main__.py" or 'if __name__ == "__main__":' in path.read_text()


def test_no_module_imports_a_command():
    modules = _modules()
    commands = {m for m, p in modules.items() if _is_command(p)}
    assert {"study.tune", "study.export", "study.report.__main__"} <= commands
    wrong = sorted((m, c) for m, p in modules.items() for c in _imports(p, modules)
                   if c in commands and c != m)
    assert not wrong, f"modules importing a command: {wrong}"


def test_no_circle_of_imports():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return seen

    # A package imports what its __init__ re-exports; its own modules importing it is no circle.
    circles = sorted(m for m in graph if m in reaches(m) and not modules[m].name == "__init__.py")
    assert not circles, f"modules that import themselves through others: {circles}"


def _layer(module: str, path: Path) -> str | None:
    """The layer a module belongs to; None for a module at the top of study/ that is not a
    command (it has no layer: it should move down into one)."""
    if module == "study" or _is_command(path):
        return "commands"
    for layer in LAYERS[:-1]:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def test_every_module_sits_in_a_layer():
    modules = _modules()
    loose = sorted(m for m, p in modules.items() if _layer(m, p) is None)
    assert not loose, f"modules at the top of study/ that are not commands: {loose}"


def test_no_import_runs_up_the_layers():
    """A module not yet in a layer is held to the library's rule (``study.engine``'s rank):
    it imports neither the report's making nor a benchmark nor a command."""
    modules = _modules()
    rank = {layer: i for i, layer in enumerate(LAYERS)}

    def rank_of(m: str) -> int:
        return rank[_layer(m, modules[m]) or "study.engine"]

    up = sorted((m, c) for m, p in modules.items() for c in _imports(p, modules)
                if rank_of(c) > rank_of(m))
    assert not up, f"imports up the layers (module, what it imports): {up}"


def test_no_name_means_two_things_across_the_packages():
    """A module's name says what it holds, once: no two modules of ``study`` and
    ``trainables`` share one (a package's ``__init__`` and ``__main__`` aside), and no package
    is named as a module elsewhere."""
    names: dict[str, list[str]] = {}
    for module, path in _modules().items():
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(module.rsplit(".", 1)[-1], []).append(module)
    packages = {m.rsplit(".", 1)[-1]: m for m, p in _modules().items() if p.name == "__init__.py"}
    twice = {n: ms for n, ms in names.items() if len(ms) > 1 or n in packages}
    assert not twice, twice


def test_the_top_of_study_holds_its_commands_and_little_else():
    top = sorted(p.name for p in (ROOT / "study").glob("*.py"))
    assert len(top) <= MAX_TOP, top


def test_no_module_of_either_package_grows_far_past_300_lines():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES
            for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_old_import_paths_answer():
    """A module's old path (the flat layout before the layers) still answers, for each name it
    held, including the classes saved studies' pickles name (tests/test_saved_study.py resumes
    one)."""
    import importlib

    from study import OLD_PATHS, RENAMED

    for old in OLD_PATHS:
        importlib.import_module(old)
    for old, new in RENAMED.items():
        module, _, name = old.rpartition(".")
        target, _, new_name = new.rpartition(".")
        assert getattr(importlib.import_module(module), name) is \
            getattr(importlib.import_module(target), new_name), old
    from study.checkpoints import LatestCheckpointOnly, stop_if_disk_full  # noqa: F401
    from study.guard import DiskFloor, GuardedClient
    from study.progress import Progress, StudySearch
    from study.search import StratifiedASHA, StratifiedSearch, StudyASHA  # noqa: F401
    from study.tracking import MlflowTracking, TrialSetup  # noqa: F401
    from trainables.train import Trainer

    from study.records import TrialRecord, read_trials  # noqa: F401

    assert StudySearch.__module__ == "study.engine.search"
    assert (Progress.__module__, DiskFloor.__module__, GuardedClient.__module__) == (
        "study.engine.progress", "study.engine.faults", "study.engine.faults")
    assert Trainer.__module__ == "trainables.trainer"
    with pytest.raises(AttributeError, match="moved to study.engine.search"):
        _ = importlib.import_module("study.search").NoSuchName
