"""Running a study: the tuner, search and scheduler, tracking, the console, interrupts and
faults, resume repair, checkpoints, the cluster, the end-of-study work."""
