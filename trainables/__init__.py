"""The training core: decoupled ResNets trained by local (subsampled) SimCLR losses, in plain
PyTorch; ``tune_trainable`` is the one module that touches Ray and MLflow."""

from trainables.moved import keep_old_paths

keep_old_paths({
    "trainables.train": ("trainables.trainer",),
    "trainables.toy": ("trainables.toy_model",),
    "trainables.report": ("trainables.results",),
})
