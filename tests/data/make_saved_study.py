"""Make ``saved-study.tar.gz``: a small study started and killed (SIGKILL, mid-wave) by the code
of this checkout, kept as test data so that a later layout of the code can be checked to resume
it (``tests/test_saved_study.py``).

The store holds absolute paths (MLflow's artifact locations, the plan's space file), so the
study is made at, and restored to, one fixed folder: ``ROOT``.

    python tests/data/make_saved_study.py   # from the repository root, ~1 minute
"""

import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_faults import Study, ended, signal_group, started  # noqa: E402

ROOT = Path("/tmp/lcl-saved-study")
NAME = "saved"
ARCHIVE = HERE / "saved-study.tar.gz"


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    study = Study(ROOT, NAME)
    proc = study.start()
    # Two trials ended, the next two started and one of them past its first epoch: a study
    # with finished runs, running ones, checkpoints and ASHA rungs, killed between Ray's saves.
    study.watch(proc, lambda lines: ended(lines) >= 2 and started(lines) >= 3
                and "epoch 1/2" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    (ROOT / "MADE_BY").write_text(f"{commit}\n")
    with tarfile.open(ARCHIVE, "w:gz") as tar:
        for name in ("mlruns", "space.yaml", "MADE_BY"):
            tar.add(ROOT / name, arcname=name)
    print(f"{ARCHIVE} ({ARCHIVE.stat().st_size // 1024} KiB) from commit {commit}")


if __name__ == "__main__":
    main()
