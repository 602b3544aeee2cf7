"""Data sets as whole uint8 tensors, with a validation split carved from the labelled train set.

``load_data`` returns a ``DataBundle``: the images self-supervised training sees (``pretrain``),
the labelled train part (kNN bank, linear evaluation), the validation split (every selection
signal) and the test set (reported only). Batches are index slices of these tensors on the
training device; there is no per-image loader on the hot path.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from trainables.errors import DataError
from trainables.specs import (  # noqa: F401 (their home is trainables.specs)
    DEBIAN_FMNIST,
    SPECS,
    DatasetSpec,
    dataset_spec,
)

SPLIT_SEED = 0  # the validation (and digits' test) split never moves with the run's seed
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


@dataclass
class DataBundle:
    """uint8 images [N, C, H, W] and int64 labels; ``pretrain`` has no labels."""

    spec: DatasetSpec
    pretrain: torch.Tensor
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def describe(self) -> dict:
        """Name, split sizes and a digest of the held-out parts (validation and test images and
        labels): what a run trained and was measured on, for its tracking record."""
        h = hashlib.sha256(self.spec.name.encode())
        for t in (self.val_x, self.val_y, self.test_x, self.test_y):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        sizes = {"pretrain": len(self.pretrain), "train": len(self.train_x),
                 "val": len(self.val_x), "test": len(self.test_x)}
        return {"name": self.spec.name, **sizes, "digest": h.hexdigest()[:16],
                "shape": list(self.train_x.shape[1:])}

    def to(self, device: torch.device | str) -> DataBundle:
        """The bundle on ``device``; tensors that are one tensor here stay one tensor there
        (``pretrain`` is ``train_x`` for every data set without extra unlabeled images)."""
        copies: dict[int, torch.Tensor] = {}
        moved = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if isinstance(t, torch.Tensor):
                if id(t) not in copies:
                    copies[id(t)] = t.to(device)
                moved[f.name] = copies[id(t)]
        return replace(self, **moved)


def load_data(
    name: str,
    data_dir: str | Path = "data",
    subset: int | None = None,
    download: bool = True,
) -> DataBundle:
    """Load ``name`` into memory; ``subset`` keeps the first images of the shuffled train parts."""
    spec = dataset_spec(name)
    root = Path(data_dir).expanduser()
    pretrain_extra, (train_x, train_y), (test_x, test_y) = _LOADERS[name](root, download, spec)
    (train_x, train_y), (val_x, val_y) = _split(train_x, train_y, spec.val_fraction)
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
        if pretrain_extra is not None:
            pretrain_extra = pretrain_extra[:subset]
    pretrain = train_x if pretrain_extra is None else torch.cat([pretrain_extra, train_x])
    return DataBundle(spec, pretrain, train_x, train_y, val_x, val_y, test_x, test_y)


def _split(x: torch.Tensor, y: torch.Tensor, fraction: float):
    """Shuffle with the fixed split seed and carve ``fraction`` off as the held-out part."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_held = max(1, int(round(fraction * len(x))))
    keep, held = perm[n_held:], perm[:n_held]
    return (x[keep], y[keep]), (x[held], y[held])


def _images(array, hwc: bool = False) -> torch.Tensor:
    """uint8 [N, C, H, W] from [N, H, W] or (``hwc``) [N, H, W, C] arrays."""
    t = torch.as_tensor(np.asarray(array), dtype=torch.uint8)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif hwc:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


def _labels(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.int64)


def _torchvision(cls, root: Path, download: bool, spec: DatasetSpec, **kwargs):
    """Open a torchvision data set from ``root``, downloading it when allowed and possible."""
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError as missing:
        reason = f"{missing}"
    if download:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # torchvision prints its progress
                return cls(str(root), download=True, **kwargs)
        except Exception as e:  # no network, a proxy, a partial file: all end the same way
            reason = f"download failed: {type(e).__name__}: {e}"
    reason = " ".join(reason.split()).rstrip(".")
    offline = f", {spec.offline}," if spec.offline else ""
    raise DataError(
        f"{spec.name} not found ({reason}); put the files in {spec.files.format(root=root)}"
        f"{offline} or run once with network access"
    )


def _digits(root: Path, download: bool, spec: DatasetSpec):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    y = _labels(digits.target)
    # Digits has no official test set: a fixed 20% plays that part.
    (train_x, train_y), test = _split(x, y, 0.2)
    return None, (train_x, train_y), test


def _fmnist(root: Path, download: bool, spec: DatasetSpec):
    from torchvision.datasets import FashionMNIST

    copy_debian_fmnist(root)
    parts = [_torchvision(FashionMNIST, root, download, spec, train=t) for t in (True, False)]
    return None, *((_images(p.data), _labels(p.targets)) for p in parts)


def copy_debian_fmnist(root: Path) -> bool:
    """Decompress Debian's Fashion-MNIST into ``root`` where ``root`` lacks the files and the
    package is installed; says so once. Each file is written whole or not at all, so trials that
    race here cannot read half a file. Returns whether anything was copied."""
    raw = Path(root) / "FashionMNIST" / "raw"
    missing = [f for f in FMNIST_FILES if not (raw / f).is_file()]
    if not missing or not all((DEBIAN_FMNIST / f"{f}.gz").is_file() for f in FMNIST_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in missing:
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        with gzip.open(DEBIAN_FMNIST / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)
    print(f"fmnist: read Debian's files in {DEBIAN_FMNIST} (decompressed into {raw})",
          file=sys.stderr)
    return True


def prepare_data(name: str, data_dir: str | Path = "data", download: bool = True) -> None:
    """Make sure ``name``'s files are in ``data_dir`` (downloading, or copying Debian's), without
    loading more than needed: a study's driver calls it once, so that its trials only read."""
    spec = dataset_spec(name)
    root = Path(data_dir).expanduser()
    if name == "fmnist":
        from torchvision.datasets import FashionMNIST

        copy_debian_fmnist(root)
        _torchvision(FashionMNIST, root, download, spec, train=False)
    elif name == "cifar10":
        from torchvision.datasets import CIFAR10

        _torchvision(CIFAR10, root, download, spec, train=False)
    elif name == "stl10":
        from torchvision.datasets import STL10

        _torchvision(STL10, root, download, spec, split="test")  # checks every file


def _cifar10(root: Path, download: bool, spec: DatasetSpec):
    from torchvision.datasets import CIFAR10

    parts = [_torchvision(CIFAR10, root, download, spec, train=t) for t in (True, False)]
    return None, *((_images(p.data, hwc=True), _labels(p.targets)) for p in parts)


def _stl10(root: Path, download: bool, spec: DatasetSpec):
    from torchvision.datasets import STL10

    # Pre-training on unlabeled + train; evaluation trains on the 5k labelled train images.
    unlabeled = _torchvision(STL10, root, download, spec, split="unlabeled")
    train = _torchvision(STL10, root, download, spec, split="train")
    test = _torchvision(STL10, root, download, spec, split="test")
    return (
        _images(unlabeled.data),
        (_images(train.data), _labels(train.labels)),
        (_images(test.data), _labels(test.labels)),
    )


_LOADERS: dict[str, Callable] = {
    "digits": _digits,
    "fmnist": _fmnist,
    "cifar10": _cifar10,
    "stl10": _stl10,
}
