"""Hyperparameter studies of subsampled decoupled SimCLR, in layers (README, "How the code is
laid out"): the commands here, then ``engine`` (running a study), ``records`` (what a study
keeps), ``spaces`` (what a study searches), then ``trainables``. ``benchmarks`` stands apart.

``OLD_PATHS``: where the modules of the flat layout went. Saved studies name them in their
pickles, so the old names keep answering (``trainables.moved``)."""

from trainables.moved import keep_old_paths

OLD_PATHS = {
    "study._cli": ("study.engine.console", "study.records.params"),
    "study.ashareplay": ("study.benchmarks.asha_monitor",),
    "study.bookkeeping": ("study.benchmarks.bookkeeping",),
    "study.checkpoints": ("study.engine.checkpoints", "study.engine.faults"),
    "study.cluster": ("study.engine.cluster",),
    "study.compare": ("study.records.comparison", "study.records.compare_tables"),
    "study.exportfile": ("study.records.exported",),
    "study.faketrial": ("study.benchmarks.fake_trial",),
    "study.finish": ("study.engine.finish",),
    "study.footprint": ("study.records.footprint",),
    "study.guard": ("study.engine.faults",),
    "study.lifecycle": ("study.engine.lifecycle",),
    "study.logs": ("study.engine.library_logs",),
    "study.measure": ("study.benchmarks.training_speed",),
    "study.paper": ("trainables.paper",),
    "study.pareto": ("study.records.pareto",),
    "study.pipebench": ("study.benchmarks.pipeline_speed",),
    "study.plan": ("study.records.plan", "study.engine.planning"),
    "study.progress": ("study.engine.progress", "study.engine.search", "study.engine.faults"),
    "study.registry": ("study.engine.registry",),
    "study.replicate": ("study.benchmarks.replicate",),
    "study.report.data": ("study.report.gather",),
    "study.resume": ("study.engine.resume.saves", "study.engine.resume.lost",
                     "study.engine.resume.rungs"),
    "study.search": ("study.engine.search", "study.engine.scheduler"),
    "study.space": ("study.spaces.types",),
    "study.spacefile": ("study.spaces.loading",),
    "study.state": ("study.records.ray_state", "study.engine.resume.checkpoint_repair"),
    "study.stop": ("study.engine.interrupts", "study.engine.faults"),
    "study.store": ("study.records.store", "study.records.browse", "study.engine.provenance"),
    "study.strata": ("study.spaces.strata", "study.records.plan"),
    "study.summary": ("study.engine.summary",),
    "study.tracking": ("study.engine.tracking",),
    "study.tuner": ("study.engine.tuner",),
    "study.uibench": ("study.benchmarks.ui_speed",),
}
# Names that changed on the way (the old module's name -> where it is now).
RENAMED = {
    "study.checkpoints.DISK_FLOOR": "study.engine.faults.FLOOR_BYTES",
    "study.compare._g": "study.records.formatting.num",
    "study.compare.pct": "study.records.formatting.pct_spread",
    "study.plan.parse_study_args": "study.engine.planning.study_flags",
    "study.report.data.load_study": "study.report.gather.gather_study",
    "study.report.data.t_text": "study.records.formatting.t_text",
    "study.strata.check_K": "study.spaces.strata.check_only_K",
    "study.strata.paper_points": "study.spaces.strata.stratum_points",
}
keep_old_paths(OLD_PATHS, RENAMED)
