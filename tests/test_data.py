"""The real torchvision loaders on small files written in the real on-disk formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.stl10 as tv_stl10

import trainables.data as data_module
from trainables.config import TrainConfig
from trainables.data import DEBIAN_FMNIST, FMNIST_FILES, load_data, prepare_data
from trainables.errors import DataError
from trainables.trainer import Trainer

RNG = np.random.default_rng(0)


def _exists(fpath, md5=None):
    """The real files' md5 sums cannot match small test files: check presence only."""
    return os.path.isfile(fpath)


@pytest.fixture
def skip_md5(monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", _exists)
    monkeypatch.setattr(tv_stl10, "check_integrity", _exists)


def _write_idx(path, array):
    dims = array.shape
    # IDX magic: two zero bytes, type code 0x08 (uint8), number of dimensions.
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, len(dims)]))
        f.write(struct.pack(f">{len(dims)}I", *dims))
        f.write(array.astype(np.uint8).tobytes())


def test_fmnist_from_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    train = RNG.integers(0, 256, (50, 28, 28))
    test = RNG.integers(0, 256, (20, 28, 28))
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(50) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(20) % 10)

    data = load_data("fmnist", tmp_path, download=False)
    assert data.pretrain.shape == (45, 1, 28, 28) and data.pretrain.dtype == torch.uint8
    assert data.val_x.shape == (5, 1, 28, 28)
    assert data.test_x.shape == (20, 1, 28, 28)
    assert torch.equal(data.test_x[3, 0], torch.as_tensor(test[3], dtype=torch.uint8))
    _assert_split_is_a_partition(data, train, np.arange(50) % 10)


def test_cifar10_from_pickle_batches(tmp_path, skip_md5):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, (6, 3 * 32 * 32)).astype(np.uint8)
        images[name] = x
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": [int(v) for v in RNG.integers(0, 10, 6)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)

    data = load_data("cifar10", tmp_path, download=False)
    assert data.pretrain.shape == (27, 3, 32, 32)
    assert data.val_x.shape == (3, 3, 32, 32)
    # CIFAR rows are channel-major: the first 1024 bytes are the red plane.
    expected = torch.as_tensor(images["test_batch"][0].reshape(3, 32, 32))
    assert torch.equal(data.test_x[0], expected)


def test_stl10_from_binaries(tmp_path, skip_md5):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()

    def write(name, n, labels=True):
        x = RNG.integers(0, 256, (n, 3, 96, 96)).astype(np.uint8)
        # STL-10 stores each image column-major: transpose H and W on disk.
        x.transpose(0, 1, 3, 2).tofile(folder / f"{name}_X.bin")
        if labels:
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{name}_y.bin")
        return x

    train = write("train", 20)
    write("test", 10)
    write("unlabeled", 15, labels=False)

    data = load_data("stl10", tmp_path, download=False)
    # Pre-training sees unlabeled + the labelled train part (validation held out).
    assert data.pretrain.shape == (15 + 18, 3, 96, 96)
    assert data.train_x.shape == (18, 3, 96, 96) and data.val_x.shape == (2, 3, 96, 96)
    assert data.test_y.tolist() == list(range(10))
    _assert_split_is_a_partition(data, train, np.arange(20) % 10)


def test_digits_is_offline_and_split_fixed():
    a = load_data("digits")
    b = load_data("digits")
    assert a.train_x.shape[1:] == (1, 8, 8)
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_y, b.test_y)


def test_subset_caps_the_train_images():
    data = load_data("digits", subset=100)
    assert len(data.pretrain) == len(data.train_x) == 100
    assert len(data.val_x) == len(load_data("digits").val_x)  # validation is never cut


def test_missing_files_without_download_name_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FMNIST", tmp_path / "no-package")
    with pytest.raises(DataError, match=r"FashionMNIST/raw/.*train-images-idx3-ubyte.*"
                                        r"apt-get install dataset-fashion-mnist"):
        load_data("fmnist", tmp_path, download=False)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_data("cifar10", tmp_path, download=False)


def _assert_split_is_a_partition(data, train_images, train_labels):
    """Train part and validation split together are exactly the labelled train set."""
    rows = {bytes(img.numpy().tobytes()) for img in torch.cat([data.train_x, data.val_x])}
    source = {
        bytes(torch.as_tensor(np.asarray(img), dtype=torch.uint8).reshape(data.train_x.shape[1:])
              .numpy().tobytes())
        for img in train_images
    }
    assert rows == source
    assert len(data.train_x) + len(data.val_x) == len(train_images)
    assert sorted(torch.cat([data.train_y, data.val_y]).tolist()) == sorted(train_labels.tolist())


def test_tensors_shared_on_the_host_stay_shared_on_the_device():
    """Without extra unlabeled images (all but STL-10) pretrain is the train part: one copy on
    the device, not two."""
    data = load_data("digits")
    assert data.pretrain is data.train_x
    moved = data.to("meta")
    assert moved.pretrain.device.type == "meta" and moved.pretrain is moved.train_x
    assert moved.val_x is not moved.train_x


def _fake_debian_package(folder):
    """The package's layout with small arrays: the four IDX files, gzipped."""
    folder.mkdir()
    arrays = {"train-images-idx3-ubyte": RNG.integers(0, 256, (40, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(40) % 10,
              "t10k-images-idx3-ubyte": RNG.integers(0, 256, (10, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(10) % 10}
    for name, array in arrays.items():
        _write_idx(folder / name, array)
        with open(folder / name, "rb") as f, gzip.open(folder / f"{name}.gz", "wb") as g:
            g.write(f.read())
        os.remove(folder / name)
    folder.chmod(0o555)  # read-only, as under /usr/share
    return arrays


def test_fmnist_without_files_reads_debians_package_once(tmp_path, monkeypatch, capsys):
    arrays = _fake_debian_package(tmp_path / "debian")
    monkeypatch.setattr(data_module, "DEBIAN_FMNIST", tmp_path / "debian")
    data = load_data("fmnist", tmp_path / "data", download=False)
    assert len(data.train_x) + len(data.val_x) == 40 and len(data.test_x) == 10
    assert torch.equal(data.test_x[:, 0], torch.as_tensor(arrays["t10k-images-idx3-ubyte"],
                                                          dtype=torch.uint8))
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FMNIST_FILES)  # no temporary left
    assert capsys.readouterr().err.count(f"read Debian's files in {tmp_path / 'debian'}") == 1
    load_data("fmnist", tmp_path / "data", download=False)
    assert "Debian" not in capsys.readouterr().err  # said once: the files are in place now


def test_prepare_data_makes_the_files_ready_or_says_why(tmp_path, monkeypatch):
    _fake_debian_package(tmp_path / "debian")
    monkeypatch.setattr(data_module, "DEBIAN_FMNIST", tmp_path / "debian")
    prepare_data("fmnist", tmp_path / "data", download=False)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / FMNIST_FILES[0]).is_file()
    prepare_data("digits", tmp_path / "nowhere", download=False)  # shipped with scikit-learn
    with pytest.raises(DataError, match="put the files in .*cifar-10-batches-py"):
        prepare_data("cifar10", tmp_path / "data", download=False)


@pytest.mark.skipif(not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the real Fashion-MNIST is not installed here: "
                           "apt-get install dataset-fashion-mnist")
def test_the_real_fashion_mnist(tmp_path):
    data = load_data("fmnist", tmp_path, download=False)
    assert len(data.train_x) + len(data.val_x) == 60_000 and len(data.test_x) == 10_000
    assert data.train_x.shape[1:] == (1, 28, 28) and data.train_x.dtype == torch.uint8
    assert len(data.val_x) == 6_000 and data.pretrain is data.train_x
    labels = torch.cat([data.train_y, data.val_y])
    assert torch.bincount(labels).tolist() == [6_000] * 10
    assert torch.bincount(data.test_y).tolist() == [1_000] * 10
    cfg = TrainConfig(dataset="fmnist", K=2, threshold=0.3, batch_size=64, width=0.25,
                      device="cpu", epochs=1)
    trainer = Trainer(cfg, data)
    step = trainer.train_step(data.pretrain[:64])  # one step on a real batch
    assert step.shape == (2, 3) and torch.isfinite(step).all()
