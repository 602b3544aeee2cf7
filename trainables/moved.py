"""Old import paths, kept: a module that moved is still found under the name it had.

Saved studies need it: Ray Tune's ``tuner.pkl`` and the searcher's pickle name classes by the
import path they had when the study started (``study.search.StudySearch``), and a resumed study
unpickles them. Ray kept ``ray.tune.suggest`` working the same way when it became
``ray.tune.search``. Each old name maps to the modules that now hold what it held, looked up in
order: an old module that was split in two answers for both halves; a name that was renamed on
the way is looked up by its new one."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

_TABLE: dict[str, tuple[str, ...]] = {}
_RENAMED: dict[str, str] = {}  # "old.module.name" -> "new.module.new_name"


class _OldModule(types.ModuleType):
    """An old path: every attribute comes from the modules that hold it now."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"moved to {', '.join(targets)}")
        self.__targets = targets

    def __getattr__(self, attr: str):
        renamed = _RENAMED.get(f"{self.__name__}.{attr}")
        if renamed is not None:
            module, _, name = renamed.rpartition(".")
            return getattr(importlib.import_module(module), name)
        if not attr.startswith("__"):
            for target in self.__targets:
                module = importlib.import_module(target)
                if hasattr(module, attr):
                    return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} (moved to "
                             f"{', '.join(self.__targets)}) has no attribute {attr!r}")

    def __dir__(self):
        return sorted({a for t in self.__targets for a in dir(importlib.import_module(t))})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _TABLE else None

    def create_module(self, spec):
        return _OldModule(spec.name, _TABLE[spec.name])

    def exec_module(self, module):
        pass


def keep_old_paths(table: dict[str, tuple[str, ...]], renamed: dict[str, str] | None = None
                   ) -> None:
    """Answer each old module name in ``table`` with the modules it names, from now on, and
    each old ``module.name`` in ``renamed`` with the new one it names."""
    _TABLE.update(table)
    _RENAMED.update(renamed or {})
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
