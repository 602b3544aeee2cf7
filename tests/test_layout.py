"""The layout the README describes, checked on the source: no module imports a command, no two
modules import each other (imports inside functions count: they only defer the circle), and no
module on the study side grows far past 300 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "trainables")
MAX_LINES = 320  # "about 300"


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


def test_no_study_module_grows_far_past_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "study").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
