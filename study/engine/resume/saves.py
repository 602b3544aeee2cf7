"""Ray Tune's saved state kept in whole generations, one per save, so that a driver killed
while Ray copies its files into the store leaves a save to resume from (the package's
docstring says when each is used)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ray.tune import Callback

from study.records.store import Store

# Ray Tune 2.60's files of a save: TuneController.CKPT_FILE_TMPL, SearchGenerator's and
# Searcher's (a search), BasicVariantGenerator's (a grid or a re-run).
RAY_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
             "basic-variant-state-*.json")
KEEP = 2  # generations kept: the newest, and the one before while the newest is written


def generations_dir(store: Store, study: str) -> Path:
    """Where a study's generations live: beside Ray's experiment folder, never inside it (Ray
    copies every .json and .pkl of that folder back on a restore)."""
    return _generations_in(store.ray_dir, study)


def _generations_in(ray_dir, study: str) -> Path:
    return Path(ray_dir) / ".generations" / study


class SavedGenerations(Callback):
    """At each of Ray's saves, its files kept as one whole generation.

    Ray saves its callbacks' state right after it wrote the experiment state and the searcher
    into the staging folder, and before it copies them to the store: ``get_state`` is that
    moment. It returns None (nothing of its own to save)."""

    def __init__(self):
        self._staging: str | None = None
        self._folder: Path | None = None

    def __getstate__(self) -> dict:
        return {"_staging": None, "_folder": None}

    def on_step_begin(self, iteration, trials, **info):
        # Both from the run's own storage: a study resumed from a store that moved writes its
        # generations where the store is now. (Before its first trial Ray saves an empty
        # study: no generation of it is kept.)
        if self._staging is None and trials:
            storage = trials[0].storage
            self._staging = storage.experiment_driver_staging_path
            self._folder = _generations_in(storage.storage_fs_path, storage.experiment_dir_name)

    def get_state(self) -> None:
        if self._staging is not None:
            save_generation(Path(self._staging), self._folder)
        return None


def save_generation(staging: Path, folder: Path) -> int | None:
    """The newest of each of Ray's files in ``staging`` as generation N + 1; the number."""
    files = [f for f in (_newest(staging, p) for p in RAY_FILES) if f is not None]
    if not files:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    done = _generations(folder)
    number = int(done[-1].name.split("-")[1]) + 1 if done else 1
    part = folder / f".gen-{number:06d}.part"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    for f in files:
        shutil.copyfile(f, part / f.name)
    os.replace(part, folder / f"gen-{number:06d}")  # a folder's rename is atomic
    for old in done[:-(KEEP - 1)] if KEEP > 1 else done:
        shutil.rmtree(old, ignore_errors=True)
    return number


def install_generation(experiment_dir: Path, folder: Path) -> str | None:
    """Ray's files in the store replaced by the newest whole generation, where they differ;
    what was wrong, in one line, or None (no generation: a study saved before them, or
    stopped before Ray's first save; or the store already held it)."""
    done = _generations(folder)
    if not done or not experiment_dir.is_dir():
        return None
    newest = done[-1]
    wrong = []
    for pattern in RAY_FILES:
        ours, theirs = _newest(newest, pattern), _newest(experiment_dir, pattern)
        if ours is None:
            continue
        if theirs is None:
            wrong.append(f"no {_what(pattern)}")
        elif theirs.name != ours.name:
            wrong.append(f"the {_what(pattern)} from another save")
        elif theirs.read_bytes() != ours.read_bytes():
            wrong.append(f"the {_what(pattern)} cut short or from another save")
    if not wrong:
        return None
    for pattern in RAY_FILES:
        ours = _newest(newest, pattern)
        if ours is None:
            continue
        for f in experiment_dir.glob(pattern):
            f.unlink()
        part = experiment_dir / f".{ours.name}.part"
        shutil.copyfile(ours, part)
        os.replace(part, experiment_dir / ours.name)
    return (f"saved state: Ray's copy in the store had {', '.join(wrong)} (a driver killed "
            f"while Ray copied it); used generation {int(newest.name.split('-')[1])}, "
            f"its last whole save")


def keep_in_generation(experiment_dir: Path, folder: Path) -> None:
    """The store's trial list, repaired on resume (``study.engine.resume.checkpoint_repair``), made
    the newest generation's too: a later ``--resume`` then finds the two alike, and says nothing."""
    done = _generations(folder)
    theirs = _newest(experiment_dir, RAY_FILES[0])
    if not done or theirs is None or not (done[-1] / theirs.name).exists():
        return
    part = done[-1] / f".{theirs.name}.part"
    shutil.copyfile(theirs, part)
    os.replace(part, done[-1] / theirs.name)


def _what(pattern: str) -> str:
    return {"experiment_state-*.json": "trial list", "search_gen_state-*.json":
            "search generator's state", "searcher-state-*.pkl": "searcher's file",
            "basic-variant-state-*.json": "grid generator's state"}[pattern]


def _newest(folder: Path, pattern: str) -> Path | None:
    files = sorted(folder.glob(pattern))  # Ray's own rule: the newest by name
    return files[-1] if files else None


def _generations(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("gen-*") if p.is_dir()) if folder.is_dir() else []
