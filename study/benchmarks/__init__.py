"""Benchmarks (``python -m study.bench``): the training core's speed and memory, the pipeline's,
what a Ray Tune trial adds to a run, GPUs shared by several trials, the study's bookkeeping at
scale, the UI's page, ASHA's monitor. Apart from the library's layers: nothing below imports
them."""
