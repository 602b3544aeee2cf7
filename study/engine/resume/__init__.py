"""How a stopped study is repaired before it resumes, so that the study it continues is the one
that would have run without the stop. Every repair says so in one console line.

Ray Tune saves its experiment state (the trial list), the search generator's state and the
searcher's pickle together into a staging folder, then copies them into the store file by file,
in no fixed order and not atomically: a driver killed in the middle leaves a cut file, or a
searcher one save newer or older than the trial list. So, at each of Ray's saves, once they
are whole in the staging folder and before the copy starts, ``saves.SavedGenerations`` keeps them as
one generation (a folder written under a temporary name, then renamed); ``--resume`` puts the
newest generation back into the store before Ray reads it (``saves.install_generation``).

Then, in order (``study.engine.lifecycle`` and ``study.engine.tuner``):
- each continued trial is pointed at its newest whole checkpoint (``checkpoint_repair``);
- a trial run that Ray's state does not hold (the driver was killed between the trial's start
  and Ray's next save) is closed as lost (``lost.close_lost_runs``); its Optuna trial is closed by
  the restored searcher, which queues a point to evaluate again where it was one
  (``lost.close_unknown_trials``, from ``study.engine.search.StudySearch.restore``);
- ASHA's rungs are rebuilt from every trial's monitor values in the store, in the order they
  arrived (``rungs.rung_events``), so that the decisions after the resume are those the study would
  have taken (``study.engine.scheduler.StudyASHA.rebuild``).
"""
