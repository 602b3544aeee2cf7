"""A study saved and killed by an earlier version of the code (``data/saved-study.tar.gz``, made
by ``data/make_saved_study.py`` at the commit in its ``MADE_BY``) resumes to a complete study under
this checkout: Ray's ``tuner.pkl`` and the searcher's pickle name the classes of that version by
their old import paths (``study.search.StudySearch``, ``study.progress.Progress``, ...)."""

import shutil
import tarfile
from pathlib import Path

import pytest
from test_faults import Study, check_complete, check_resume_of_a_complete_study_changes_nothing

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path("/tmp/lcl-saved-study")  # where it was made: the store holds absolute paths


@pytest.fixture
def saved_study():
    shutil.rmtree(ROOT, ignore_errors=True)
    with tarfile.open(DATA / "saved-study.tar.gz") as tar:
        # Python's safe extraction where it has it (3.11.4 and later).
        tar.extractall(ROOT, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    yield Study(ROOT, "saved")
    shutil.rmtree(ROOT, ignore_errors=True)


def test_the_saved_study_names_the_old_import_paths(saved_study):
    """The test data is what it says: pickles that name the modules as they were."""
    pickled = (saved_study.root / "ray" / "saved" / "tuner.pkl").read_bytes()
    for old in (b"study.search", b"study.progress", b"study.tracking", b"study.checkpoints",
                b"study.guard", b"study.resume", b"trainables.tune_trainable"):
        assert old in pickled, old
    assert not saved_study.store.load_study("saved").get("completed")


@pytest.mark.slow
def test_a_study_saved_by_an_earlier_layout_resumes_to_a_complete_study(saved_study):
    saved_study.stratified = True  # made by a version with one search per split
    saved_study.complete()
    check_complete(saved_study)
    check_resume_of_a_complete_study_changes_nothing(saved_study)
