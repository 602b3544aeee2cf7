"""What the code knows of data sets and architectures without torch: each data set's shape
and files, each ResNet's residual blocks, the split points of Table 3, the head designs, the
subsampling modes and the names of the files a trial writes. Commands that only read a study
(export, report, a study's footprint) import this, never torch.
``trainables.data``, ``trainables.models`` and ``trainables.losses`` re-export their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainables.errors import ConfigError

# Debian's copy of the real Fashion-MNIST (`apt-get install dataset-fashion-mnist`): the four
# original .gz IDX files, read-only.
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    size: int
    num_classes: int
    arch: str  # the paper's default architecture for this data set
    stem: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_fraction: float
    width: float  # default channel multiplier: narrow where a CPU must cope
    files: str  # where the raw files go, for the error message
    offline: str = ""  # another way to the files without a download, for the error message


SPECS = {
    "digits": DatasetSpec(
        "digits", 1, 8, 10, "resnet18", "small", (0.305,), (0.376,), 0.1, 0.25,
        "nowhere: scikit-learn ships them",
    ),
    "fmnist": DatasetSpec(
        "fmnist", 1, 28, 10, "resnet18", "small", (0.286,), (0.353,), 0.1, 1.0,
        "{root}/FashionMNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
        f"apt-get install dataset-fashion-mnist (Debian's copy, read from {DEBIAN_FMNIST})",
    ),
    "cifar10": DatasetSpec(
        "cifar10", 3, 32, 10, "resnet50", "small",
        (0.491, 0.482, 0.447), (0.247, 0.243, 0.262), 0.1, 1.0,
        "{root}/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    ),
    "stl10": DatasetSpec(
        "stl10", 3, 96, 10, "resnet50", "stl10",
        (0.441, 0.428, 0.387), (0.268, 0.261, 0.269), 0.1, 1.0,
        "{root}/stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
        "unlabeled_X.bin)",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ConfigError(f"dataset={name!r} is unknown; allowed: {', '.join(SPECS)}")
    return SPECS[name]



# A trial's checkpoint: the trainer, the result it ended with, its report (with the encoder).
CHECKPOINT_FILE, FINAL_FILE, REPORT_DIR = "trainer.pt", "final.json", "report"
ENCODER_FILE = "encoder_state_dict.pt"
ARCH_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}  # residual blocks per layer
STEMS = ("small", "stl10")  # 3x3/s1 for CIFAR-10, Fashion-MNIST, digits; 5x5/s2 for STL-10
HEADS = ("paper", "mlp")  # local projector designs, see ``make_head``
PARTITIONS = ("auto", "even")  # K blocks over S pipeline stages, see ``trainables.pipeline``
SUBSAMPLE_MODES = ("both", "pos", "neg")


def arch_layers(arch: str) -> tuple[int, ...]:
    if arch not in ARCH_LAYERS:
        raise ConfigError(f"arch={arch!r} is unknown; allowed: {', '.join(ARCH_LAYERS)}")
    return ARCH_LAYERS[arch]


def n_residual_blocks(arch: str) -> int:
    return sum(arch_layers(arch))


def allowed_K(arch: str) -> list[int]:
    n = n_residual_blocks(arch)
    return [k for k in range(1, n + 1) if n % k == 0]


# The split and stage rules, each written once: a run's configuration (trainables.config), a
# search space's YAML (study.spaces.loading) and the network (trainables.models) ask them here.
STAGES_RULE = "must be a whole number >= 1"


def K_problem(arch: str, K) -> str | None:
    """What is wrong with splitting ``arch`` into ``K`` blocks (Table 3: K divides its residual
    blocks), or None."""
    if K in allowed_K(arch):
        return None
    return (f"does not divide the {n_residual_blocks(arch)} residual blocks of {arch}; "
            f"allowed: {', '.join(map(str, allowed_K(arch)))}")


def stages_problem(stages, K: int | None = None, K_from: str = "") -> str | None:
    """What is wrong with ``stages`` pipeline stages (``trainables.pipeline``) for ``K`` blocks
    (a whole number from 1 to K; ``K_from`` says where K came from), or None."""
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        return STAGES_RULE
    if K is not None and stages > K:
        return (f"exceeds K={K}{f' ({K_from})' if K_from else ''}: every stage needs at least "
                f"one block")
    return None


def check_K(arch: str, K: int) -> None:
    problem = K_problem(arch, K)
    if problem is not None:
        raise ConfigError(f"K={K} {problem}")


def check_stages(K: int, stages: int) -> None:
    problem = stages_problem(stages, K)
    if problem is not None:
        raise ConfigError(f"stages={stages!r} {problem}")


def split_points(arch: str, K: int) -> list[tuple[int, int]]:
    """Decoupling points in Table 3's notation: after (layer, block), both 1-indexed."""
    check_K(arch, K)
    positions = residual_positions(arch)
    per_block = len(positions) // K
    return [positions[(k + 1) * per_block - 1] for k in range(K - 1)]


def residual_positions(arch: str) -> list[tuple[int, int]]:
    """Every residual block as (layer, block), 1-indexed, in order: Table 3's notation."""
    return [(li + 1, bi + 1) for li, n in enumerate(arch_layers(arch)) for bi in range(n)]
