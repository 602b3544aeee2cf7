"""The training loop on digits: it learns, it resumes exactly, and the command speaks JSON."""

import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.trainer import Trainer


@pytest.mark.slow
def test_every_block_learns_and_knn_beats_chance():
    cfg = TrainConfig(dataset="digits", K=4, threshold=0.0, epochs=4, batch_size=128)
    history = Trainer(cfg).fit()
    first, last = history[0], history[-1]
    for k in range(cfg.K):
        assert last["loss"][k] < first["loss"][k], f"block {k + 1}'s loss did not fall"
    assert last["knn_val_acc"] > 0.5  # chance is 0.1
    assert all(0.0 <= v <= 1.0 for r in history for v in r["kept_pos"] + r["kept_neg"])


def test_resume_matches_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(dataset="digits", K=2, threshold=0.2, epochs=2, batch_size=64, subset=256)
    straight = Trainer(cfg)
    straight.fit()

    first = Trainer(cfg)
    first.fit(epochs=1, checkpoint=tmp_path / "run.pt")
    del first
    resumed = Trainer.from_checkpoint(tmp_path / "run.pt")
    assert resumed.epoch == 1
    resumed.fit()

    a, b = straight.history[1], resumed.history[1]
    for key in ("loss", "kept_pos", "kept_neg", "knn_val_acc"):
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
    after = resumed.model.state_dict()
    for name, p in straight.model.state_dict().items():
        torch.testing.assert_close(p, after[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_path_runs_on_a_cpu_and_tracks_float32():
    """The CUDA fast path (bf16 autocast, channels_last) as far as a CPU can run it: the same
    first step as float32 to within bf16's precision, the loss itself in float32."""
    cfg = dict(dataset="digits", K=2, threshold=0.0, epochs=1, batch_size=64, subset=256,
               device="cpu")
    fp32, bf16 = Trainer(TrainConfig(**cfg, precision="fp32")), Trainer(
        TrainConfig(**cfg, precision="bf16"))
    assert not fp32.bf16 and bf16.bf16
    conv = bf16.model.blocks[1][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = fp32.data.pretrain[:64]
    torch.manual_seed(1)
    a = fp32.train_step(images)
    torch.manual_seed(1)
    b = bf16.train_step(images)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    torch.testing.assert_close(b[:, 0], a[:, 0], rtol=2e-3, atol=0.0)  # the loss per block
    record = bf16.train_epoch()
    assert 0.0 <= record["knn_val_acc"] <= 1.0


# Ops that read a tensor's value on the host: on CUDA each one waits for the GPU to catch up.
HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select",
              "unique", "_unique2", "allclose"}


class HostReads(TorchDispatchMode):
    """Counts the ops that force a device-to-host read, and ``Tensor.tolist`` / ``Tensor.cpu`` /
    ``Tensor.numpy`` calls (which never reach the dispatcher on a CPU tensor)."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.ops: list[str] = []
        for name in ("tolist", "cpu", "numpy"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, original))

    def _counted(self, name, original):
        def method(tensor, *args, **kwargs):
            self.ops.append(name)
            return original(tensor, *args, **kwargs)
        return method

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in HOST_READS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _read_counting_trainer(**overrides):
    cfg = dict(dataset="digits", K=2, threshold=0.3, epochs=3, batch_size=64, subset=256,
               device="cpu")
    trainer = Trainer(TrainConfig(**{**cfg, **overrides}))
    trainer.train_step(trainer.data.pretrain[:64])  # lazy state (Adam's moments) made first
    return trainer


@pytest.mark.parametrize("subsample", ["both", "pos", "neg"])
def test_a_training_step_never_reads_the_device(monkeypatch, subsample):
    trainer = _read_counting_trainer(subsample=subsample)
    with HostReads(monkeypatch) as reads:
        for _ in range(3):
            trainer.train_step(trainer.data.pretrain[:64])
    assert reads.ops == []


def test_an_epoch_reads_the_device_twice_whatever_its_length():
    """Once for the steps' metrics, once for the kNN monitor: never per step."""
    counts = []
    for batch in (64, 16):  # 3 and 14 steps
        trainer = _read_counting_trainer(batch_size=batch)
        with pytest.MonkeyPatch.context() as patch, HostReads(patch) as reads:
            trainer.train_epoch()
        counts.append(reads.ops)
    assert counts[0] == counts[1] == ["tolist", "_local_scalar_dense"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the sync debug mode")
def test_a_cuda_training_step_never_synchronises():
    trainer = _read_counting_trainer(device="cuda")
    batch = trainer.data.pretrain[:64]
    trainer.train_step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_fig_4_ablation_masks_only_what_it_names():
    """subsample pos drops positives only, neg negatives only, both (Eq. 5) either, in a whole
    epoch of real training."""
    def epoch(subsample):
        cfg = TrainConfig(dataset="digits", K=2, threshold=0.5, subsample=subsample, epochs=1,
                          batch_size=64, subset=256, device="cpu")
        return Trainer(cfg).train_epoch()

    pos, neg, both = epoch("pos"), epoch("neg"), epoch("both")
    assert pos["kept_neg"] == [1.0, 1.0] and min(pos["kept_pos"]) < 0.95
    assert neg["kept_pos"] == [1.0, 1.0] and min(neg["kept_neg"]) < 0.95
    assert min(both["kept_pos"]) < 0.95 and min(both["kept_neg"]) < 0.95
    assert len({pos["loss"][1], neg["loss"][1], both["loss"][1]}) == 3


def test_resuming_fp32_with_bf16_gives_adam_the_parameters_layout(tmp_path):
    """channels_last parameters with contiguous moments make CUDA's fused Adam raise."""
    cfg = dict(dataset="digits", K=2, threshold=0.0, epochs=2, batch_size=64, subset=256,
               device="cpu")
    Trainer(TrainConfig(**cfg, precision="fp32")).fit(epochs=1, checkpoint=tmp_path / "c.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "c.pt", precision="bf16")
    convs = [p for p in resumed.model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for p in resumed.model.parameters():
        state = resumed.optimizer.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].stride() == p.stride(), key
    resumed.fit()
    assert resumed.epoch == 2 and all(map(math.isfinite, resumed.history[-1]["loss"]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"K": 3}, "K=3 does not divide the 8 residual blocks of resnet18; allowed: 1, 2, 4, 8"),
        ({"threshold": 1.5}, "threshold=1.5 is outside"),
        ({"dataset": "mnist"}, "dataset='mnist' is unknown; allowed: digits, fmnist"),
        ({"arch": "vgg"}, "arch='vgg' is unknown; allowed: resnet18, resnet50"),
        ({"subsample": "all"}, "subsample='all' is unknown"),
        ({"tau": 0}, "tau=0 must be a positive number"),
        ({"precision": "fp16"}, "precision='fp16' is unknown; allowed: auto, bf16, fp32"),
        ({"monitor_every": 0}, "monitor_every=0 must be a positive number"),
        ({"monitor_images": 1}, "monitor_images=1 must be at least 2 (or None for all)"),
    ],
)
def test_bad_config_names_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "study.train", *args], capture_output=True, text=True, timeout=300
    )


def test_command_prints_json_history_last():
    res = _cli("--dataset", "digits", "--K", "2", "--threshold", "0.0", "--epochs", "2",
               "--subset", "128", "--batch-size", "64", "--linear-epochs", "3", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["epoch"] for r in out["history"]] == [1, 2]
    for r in out["history"]:
        assert len(r["loss"]) == len(r["kept_pos"]) == len(r["kept_neg"]) == 2
    assert 0 <= out["knn_val_acc"] <= 1  # its value: tests/test_features.py
    for key in ("probe_val_acc", "probe_test_acc", "effective_rank"):
        assert len(out[key]) == 2, key
    assert 0 <= out["linear_val_acc"] <= 1 and 0 <= out["linear_test_acc"] <= 1
    assert out["max_block_macs"] > 0
    # Measured on CUDA only, never estimated.
    assert (out["peak_memory_bytes"] is None) == (not torch.cuda.is_available())
    assert "epoch 2/2" in res.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--K", "3"], "error: K=3 does not divide"),
        (["--threshold", "2"], "error: threshold=2.0 is outside [-1, 1]"),
        (["--threshold", "high"], "error: argument --threshold: 'high' is not a number"),
        (["--dataset", "imagenet"], "error: dataset='imagenet' is unknown"),
        (["--dataset", "cifar10", "--no-download", "--data-dir", "/nonexistent"],
         "put the files in /nonexistent/cifar-10-batches-py/"),
    ],
)
def test_command_bad_input_is_one_line(args, message):
    res = _cli(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_threshold_slope_gives_each_block_its_own_T():
    cfg = TrainConfig(dataset="digits", K=4, threshold=0.2, threshold_slope=0.6)
    assert cfg.thresholds == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert TrainConfig(dataset="digits", K=4, threshold=0.8, threshold_slope=0.6).thresholds[
        -1] == 1.0  # clipped
    assert TrainConfig(dataset="digits", K=1, threshold=0.3, threshold_slope=1.0).thresholds == [
        0.3]
    with pytest.raises(ConfigError, match="threshold_slope=0.5 needs a threshold"):
        TrainConfig(dataset="digits", threshold=None, threshold_slope=0.5)
    with pytest.raises(ConfigError, match=r"threshold_slope=3 must be a number in \[-2, 2\]"):
        TrainConfig(dataset="digits", threshold=0.0, threshold_slope=3)


def test_each_block_keeps_pairs_by_its_own_threshold():
    """T_1 = -1 keeps every pair in block 1; T_2 = 1 drops every negative in block 2 (no two
    different images are identical); the epoch record logs each block's T beside its ratios."""
    cfg = TrainConfig(dataset="digits", K=2, threshold=-1.0, threshold_slope=2.0, epochs=1,
                      batch_size=64, subset=128)
    record = Trainer(cfg).train_epoch()
    assert record["threshold"] == [-1.0, 1.0]
    assert record["kept_neg"][0] == 1.0 and record["kept_pos"][0] == 1.0
    assert record["kept_neg"][1] < 0.01
    from trainables.tune_trainable import epoch_metrics

    m = epoch_metrics(record)
    assert (m["threshold_block1"], m["threshold_block2"]) == (-1.0, 1.0)


def test_the_monitor_cadence_and_subset_leave_training_unchanged():
    """The kNN monitor every 2 epochs (and at the last), on 64 images of each part: the same
    training as a monitor every epoch on all of them, the monitor where it is due."""
    cfg = dict(dataset="digits", K=2, threshold=0.2, epochs=3, batch_size=64, subset=256)
    full = Trainer(TrainConfig(**cfg))
    full.fit()
    cheap = Trainer(TrainConfig(**cfg, monitor_every=2, monitor_images=64))
    cheap.fit()
    assert [r["knn_val_acc"] is None for r in cheap.history] == [True, False, False]
    for a, b in zip(full.history, cheap.history):
        assert a["loss"] == b["loss"] and a["kept_neg"] == b["kept_neg"]
    for name, p in full.model.state_dict().items():
        assert torch.equal(p, cheap.model.state_dict()[name]), name
    # The subset is the first 64 of each shuffled part: the monitor on those alone.
    d = full.data
    from trainables.features import knn_accuracy, pooled_features

    bank, = pooled_features(full.model, d.train_x[:64], full.normalize)
    queries, = pooled_features(full.model, d.val_x[:64], full.normalize)
    assert cheap.history[-1]["knn_val_acc"] == knn_accuracy(
        bank, d.train_y[:64], queries, d.val_y[:64], num_classes=10,
        k=round(cheap.cfg.knn_k * 64 / len(d.train_x)))  # the full bank's k, scaled
